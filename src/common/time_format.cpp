// SPDX-License-Identifier: MIT
#include "common/time_format.h"

#include <ctime>

namespace vmshadow {

std::string format_utc(std::int64_t unix_seconds, const char* format) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[64];
    std::size_t n = std::strftime(buf, sizeof buf, format, &tm);
    return std::string(buf, n);
}

std::string iso8601_utc(std::int64_t unix_seconds) {
    return format_utc(unix_seconds, "%Y-%m-%dT%H:%M:%SZ");
}

std::string compact_utc(std::int64_t unix_seconds) {
    return format_utc(unix_seconds, "%Y%m%dT%H%M%S");
}

std::optional<std::int64_t> parse_iso8601_utc(std::string_view text) {
    std::string copy(text);  // strptime wants a terminated string
    std::tm tm{};
    const char* end = ::strptime(copy.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end != '\0') return std::nullopt;
    return static_cast<std::int64_t>(::timegm(&tm));
}

}  // namespace vmshadow
