// SPDX-License-Identifier: MIT
#pragma once
// UTC time stamps: the one place Unix seconds become text and back.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vmshadow {

// `unix_seconds` in UTC, formatted by strftime's `format`.
std::string format_utc(std::int64_t unix_seconds, const char* format);

// "2026-11-22T01:00:00Z": records, lock files and messages.
std::string iso8601_utc(std::int64_t unix_seconds);

// "20261122T010000": inside names (checkpoints, backup ids), which carry no ':'.
std::string compact_utc(std::int64_t unix_seconds);

// iso8601_utc's inverse; nullopt for any other text.
std::optional<std::int64_t> parse_iso8601_utc(std::string_view text);

}  // namespace vmshadow
