// SPDX-License-Identifier: MIT
#include "common/hex.h"

#include <gtest/gtest.h>

namespace vmshadow {
namespace {

TEST(HexTest, EncodeIsLowerCaseAndDecodeTakesEitherCase) {
    std::vector<std::uint8_t> bytes{0x00, 0x0f, 0xa5, 0xff};
    EXPECT_EQ(hex_encode(bytes), "000fa5ff");
    EXPECT_EQ(hex_encode({}), "");
    EXPECT_EQ(hex_decode("000fa5ff"), bytes);
    EXPECT_EQ(hex_decode("000FA5FF"), bytes);
    EXPECT_EQ(hex_decode(""), std::vector<std::uint8_t>{});
}

TEST(HexTest, DecodeRefusesOddLengthsAndNonDigits) {
    const std::string_view bads[] = {
        "0", "abc", "0g", "zz", " 0", "0x00", std::string_view("0\0", 2)};
    for (std::string_view bad : bads) EXPECT_FALSE(hex_decode(bad)) << bad;
    EXPECT_EQ(hex_digit_value('7'), 7);
    EXPECT_EQ(hex_digit_value('b'), 11);
    EXPECT_EQ(hex_digit_value('B'), 11);
    EXPECT_EQ(hex_digit_value('g'), -1);
}

}  // namespace
}  // namespace vmshadow
