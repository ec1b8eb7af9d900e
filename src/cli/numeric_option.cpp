// SPDX-License-Identifier: MIT
#include "cli/numeric_option.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>

namespace vmshadow::cli {
namespace {

// What the user typed, quoted, and cut short: a 300-digit number is not repeated back.
std::string shown(const std::string& text) {
    constexpr std::size_t kMax = 24;
    std::string s = text.size() > kMax ? text.substr(0, kMax) + "..." : text;
    for (char& c : s)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    return "'" + s + "'";
}

template <class T>
CLI::Option* add_whole(CLI::App& app, const std::string& name, T& value, T min, T max,
                       const std::string& help) {
    std::string range = std::to_string(min) + " to " + std::to_string(max);
    std::string help_range = std::to_string(min) + "-" + std::to_string(max);
    auto check = [min, max, range](std::string& text) -> std::string {
        long long parsed = 0;
        const char* end = text.data() + text.size();
        auto [ptr, ec] = std::from_chars(text.data(), end, parsed);
        if (text.empty() || ec != std::errc{} || ptr != end ||
            parsed < static_cast<long long>(min) || parsed > static_cast<long long>(max))
            return "must be a whole number from " + range + ", got " + shown(text);
        return {};
    };
    return app.add_option(name, value, help)
        ->type_name("N")
        ->check(CLI::Validator(check, help_range, kRangeValidator));
}

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", s);
    return buf;
}

}  // namespace

CLI::Option* add_whole_number_option(CLI::App& app, const std::string& name, long long& value,
                                     long long min, long long max, const std::string& help) {
    return add_whole(app, name, value, min, max, help);
}
CLI::Option* add_whole_number_option(CLI::App& app, const std::string& name, int& value, int min,
                                     int max, const std::string& help) {
    return add_whole(app, name, value, min, max, help);
}
CLI::Option* add_whole_number_option(CLI::App& app, const std::string& name, unsigned& value,
                                     unsigned min, unsigned max, const std::string& help) {
    return add_whole(app, name, value, min, max, help);
}

CLI::Option* add_seconds_option(CLI::App& app, const std::string& name, double& value, double min,
                                double max, const std::string& help) {
    std::string range = seconds_text(min) + " to " + seconds_text(max);
    auto check = [min, max, range](std::string& text) -> std::string {
        double parsed = 0;
        const char* end = text.data() + text.size();
        // fixed: no exponent, so "1e308" is not a number of seconds; NaN and inf fail the
        // range comparison below.
        auto [ptr, ec] = std::from_chars(text.data(), end, parsed, std::chars_format::fixed);
        if (text.empty() || ec != std::errc{} || ptr != end || !std::isfinite(parsed) ||
            parsed < min || parsed > max)
            return "must be a number of seconds from " + range + ", got " + shown(text);
        return {};
    };
    return app.add_option(name, value, help)
        ->type_name("SECONDS")
        ->check(
            CLI::Validator(check, seconds_text(min) + "-" + seconds_text(max), kRangeValidator));
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
    double number = 0;
    const char* begin = text.data();
    const char* end = begin + text.size();
    auto [ptr, ec] = std::from_chars(begin, end, number, std::chars_format::fixed);
    if (text.empty() || ec != std::errc{} || ptr == begin || !std::isfinite(number) || number < 0)
        return std::nullopt;
    std::string unit(ptr, end);
    int shift = 0;
    if (unit == "K" || unit == "KiB")
        shift = 10;
    else if (unit == "M" || unit == "MiB")
        shift = 20;
    else if (unit == "G" || unit == "GiB")
        shift = 30;
    else if (unit == "T" || unit == "TiB")
        shift = 40;
    else if (unit == "P" || unit == "PiB")
        shift = 50;
    else if (!unit.empty())
        return std::nullopt;
    double bytes = std::ldexp(number, shift);
    if (bytes >= 0x1p63) return std::nullopt;
    return static_cast<std::uint64_t>(bytes);
}

std::string size_text(std::uint64_t bytes) {
    static constexpr const char* kUnits[] = {"", "K", "M", "G", "T", "P"};
    int unit = 0;
    while (unit < 5 && bytes >= 1024 && bytes % 1024 == 0) {
        bytes /= 1024;
        ++unit;
    }
    return std::to_string(bytes) + kUnits[unit];
}

CLI::Option* add_size_option(CLI::App& app, const std::string& name, std::uint64_t& value,
                             std::uint64_t min, std::uint64_t max, const std::string& help) {
    std::string range = size_text(min) + " to " + size_text(max);
    // The validator rewrites the text to a plain byte count, which CLI11 then stores.
    auto check = [min, max, range](std::string& text) -> std::string {
        auto bytes = parse_size(text);
        if (!bytes || *bytes < min || *bytes > max)
            return "must be a size from " + range + " such as 512M, 20G or 1T, got " + shown(text);
        text = std::to_string(*bytes);
        return {};
    };
    return app.add_option(name, value, help)
        ->type_name("SIZE")
        ->transform(CLI::Validator(check, size_text(min) + "-" + size_text(max), kRangeValidator));
}

}  // namespace vmshadow::cli
