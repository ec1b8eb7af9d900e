// SPDX-License-Identifier: MIT
// common/enum_names.h: one table gives both directions.
#include "common/enum_names.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace vmshadow {
namespace {

enum class Colour { red, dark_blue, unnamed };

constexpr auto kColours =
    enum_names<Colour>({{Colour::red, "red"}, {Colour::dark_blue, "dark-blue"}}, "colourless");

TEST(EnumNames, NamesEachValueOfTheTable) {
    EXPECT_EQ(kColours.name(Colour::red), "red");
    EXPECT_EQ(kColours.name(Colour::dark_blue), "dark-blue");
}

TEST(EnumNames, AValueMissingFromTheTableGetsTheUnknownName) {
    EXPECT_EQ(kColours.name(Colour::unnamed), "colourless");
    EXPECT_EQ(kColours.name(static_cast<Colour>(42)), "colourless");
}

TEST(EnumNames, ParseIsTheInverseAndRefusesOtherText) {
    for (const auto& [value, name] : kColours.entries()) EXPECT_EQ(kColours.parse(name), value);
    EXPECT_FALSE(kColours.parse("colourless"));
    EXPECT_FALSE(kColours.parse("Red"));
    EXPECT_FALSE(kColours.parse(""));
}

TEST(EnumNames, WorksAtCompileTime) {
    static_assert(kColours.name(Colour::red) == "red");
    static_assert(*kColours.parse("dark-blue") == Colour::dark_blue);
    static_assert(kColours.entries().size() == 2);
}

TEST(EnumNames, ErrorKindNamesRoundTrip) {
    for (ErrorKind k : {ErrorKind::internal, ErrorKind::io, ErrorKind::cancelled})
        EXPECT_EQ(parse_kind_name(kind_name(k)), k);
    EXPECT_FALSE(parse_kind_name("no-such-kind"));
}

}  // namespace
}  // namespace vmshadow
