// SPDX-License-Identifier: MIT
#pragma once
// Hexadecimal text of bytes, the one way vmshadow writes and reads it: ids and hashes, key
// files, token secrets, config digests, percent-escapes.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vmshadow {

// Lower-case hex, two digits a byte.
std::string hex_encode(std::span<const std::uint8_t> bytes);
// 0..15 for a hex digit of either case, -1 for anything else.
int hex_digit_value(char c);
// The bytes of an even-length hex text (either case); nullopt when it is not one.
std::optional<std::vector<std::uint8_t>> hex_decode(std::string_view text);

}  // namespace vmshadow
