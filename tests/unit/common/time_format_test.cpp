// SPDX-License-Identifier: MIT
// common/time_format.h: the one way time stamps are written and read back.
#include "common/time_format.h"

#include <gtest/gtest.h>

namespace vmshadow {
namespace {

constexpr std::int64_t kSample = 1795309868;  // 2026-11-22T01:11:08Z

TEST(TimeFormat, Iso8601IsUtcWithZ) {
    EXPECT_EQ(iso8601_utc(kSample), "2026-11-22T01:11:08Z");
}

TEST(TimeFormat, CompactCarriesNoSeparatorsForNames) {
    EXPECT_EQ(compact_utc(kSample), "20261122T011108");
}

TEST(TimeFormat, FormatUtcTakesAnyStrftimeFormat) {
    EXPECT_EQ(format_utc(kSample, "%Y-%m"), "2026-11");
    EXPECT_EQ(format_utc(0, "%Y-%m-%d %H:%M:%S"), "1970-01-01 00:00:00");
}

TEST(TimeFormat, ParseIsTheInverseOfIso8601) {
    EXPECT_EQ(parse_iso8601_utc(iso8601_utc(kSample)), kSample);
    EXPECT_EQ(parse_iso8601_utc("1970-01-01T00:00:00Z"), 0);
}

TEST(TimeFormat, ParseRefusesOtherText) {
    EXPECT_FALSE(parse_iso8601_utc(""));
    EXPECT_FALSE(parse_iso8601_utc("2026-11-22T01:11:08"));     // no zone
    EXPECT_FALSE(parse_iso8601_utc("2026-11-22T01:11:08Z x"));  // trailing text
    EXPECT_FALSE(parse_iso8601_utc("20261122T011108"));
}

}  // namespace
}  // namespace vmshadow
