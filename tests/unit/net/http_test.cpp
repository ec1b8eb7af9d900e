// SPDX-License-Identifier: MIT
// percent_decode and parse_query at their edges.
#include "net/http.h"

#include <gtest/gtest.h>

namespace vmshadow::net {
namespace {

TEST(PercentDecodeTest, DecodesEscapesAndPlusOnlyInQueries) {
    EXPECT_EQ(percent_decode("a%20b%2Fc", false), "a b/c");
    EXPECT_EQ(percent_decode("a+b", false), "a+b");
    EXPECT_EQ(percent_decode("a+b", true), "a b");
    EXPECT_EQ(percent_decode("%2b", true), "+");
    EXPECT_EQ(percent_decode("%C3%A9", false), "\xC3\xA9");
    EXPECT_EQ(percent_decode("", false), "");
}

TEST(PercentDecodeTest, RefusesBadEscapesAndNul) {
    for (const char* bad : {"%", "%2", "a%", "%zz", "%2g", "%00", "x%0"})
        EXPECT_FALSE(percent_decode(bad, false)) << bad;
}

TEST(ParseQueryTest, SplitsDecodesAndKeepsTheLastOfARepeatedKey) {
    auto q = parse_query("a=1&b=x%20y&&c&a=2&d=");
    ASSERT_TRUE(q);
    EXPECT_EQ(q->size(), 4u);
    EXPECT_EQ(q->at("a"), "2");
    EXPECT_EQ(q->at("b"), "x y");
    EXPECT_EQ(q->at("c"), "");
    EXPECT_EQ(q->at("d"), "");
    EXPECT_TRUE(parse_query("")->empty());
    EXPECT_EQ(parse_query("k=a=b")->at("k"), "a=b");
}

TEST(ParseQueryTest, RefusesMalformedPairs) {
    EXPECT_FALSE(parse_query("=1"));
    EXPECT_FALSE(parse_query("a=%zz"));
    EXPECT_FALSE(parse_query("%00=1"));
}

TEST(HttpRequestTest, HeaderLookupIgnoresCase) {
    HttpRequest r;
    r.headers["authorization"] = "Bearer x";
    EXPECT_EQ(r.header("Authorization"), "Bearer x");
    EXPECT_EQ(r.header("missing"), "");
    EXPECT_EQ(status_reason(413), "Payload Too Large");
    EXPECT_EQ(status_reason(299), "");
}

}  // namespace
}  // namespace vmshadow::net
