// SPDX-License-Identifier: MIT
#pragma once
// The one way a command declares a numeric option: with its allowed range and unit.
//
// The value is parsed strictly (no NaN, infinity, exponent on whole numbers, trailing
// garbage or overflow) and range-checked at parse time, before any command runs, so
// `prune --keep-last -1` or `backup --thaw-deadline nan` is exit 2 with one line naming the
// range in human terms ("--keep-last: must be a whole number from 1 to 1000000, got -1").
// The same check applies to values from the config file. Declaring a numeric option with a
// bare add_option() fails tests/unit/cli/numeric_options_test.cpp, which walks the whole CLI.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

namespace vmshadow::cli {

// The name of the range validator every numeric option carries (the test looks for it).
inline constexpr const char* kRangeValidator = "vmshadow-range";

// Shared ranges: one definition per quantity, used by every command that takes it.
inline constexpr unsigned kMaxWorkers = 256;
inline constexpr double kMinThawDeadlineSeconds = 0.1;
inline constexpr double kMaxThawDeadlineSeconds = 3600;

// A whole number in [min, max] (a count, threads, levels, milliseconds).
CLI::Option* add_whole_number_option(CLI::App& app, const std::string& name, long long& value,
                                     long long min, long long max, const std::string& help);
CLI::Option* add_whole_number_option(CLI::App& app, const std::string& name, int& value, int min,
                                     int max, const std::string& help);
CLI::Option* add_whole_number_option(CLI::App& app, const std::string& name, unsigned& value,
                                     unsigned min, unsigned max, const std::string& help);

// A number of seconds in [min, max]; fractions allowed ("0.5").
CLI::Option* add_seconds_option(CLI::App& app, const std::string& name, double& value, double min,
                                double max, const std::string& help);

// A size in bytes in [min, max], written as 1048576, 512K, 512M, 20G or 1T (binary units).
CLI::Option* add_size_option(CLI::App& app, const std::string& name, std::uint64_t& value,
                             std::uint64_t min, std::uint64_t max, const std::string& help);

// "512M", "20G", "1T", "1048576" → bytes; nullopt when it is not such a size (or overflows).
std::optional<std::uint64_t> parse_size(const std::string& text);

// 1073741824 → "1G" (the largest binary unit that divides it exactly).
std::string size_text(std::uint64_t bytes);

}  // namespace vmshadow::cli
