// SPDX-License-Identifier: MIT
#pragma once
// Names a user gives vmshadow to store (restore --as, image backup --name, annotate KIND) and
// names it prints in tables.
//
// A stored name becomes a libvirt domain name, a folder name and a column in `points`: a
// newline, '/' or a 300-character name breaks one of them, so such names are refused at
// parse time (exit 2). Names stored by older versions may still hold anything, so tables print
// every name through table_cell(), which keeps the columns aligned whatever it contains.

#include <CLI/CLI.hpp>
#include <string>
#include <string_view>

namespace vmshadow::cli {

inline constexpr std::size_t kMaxNameLength = 128;

// Empty when `name` is acceptable; else why not ("is empty", "contains '/'"…), saying what is
// allowed: 1-128 characters of A-Z a-z 0-9 . _ + -, not starting with '.' or '-'.
std::string name_problem(std::string_view name);

// An option or positional whose value is such a name (checked at parse time, exit 2).
CLI::Option* add_name_option(CLI::App& app, const std::string& name, std::string& value,
                             const std::string& help);

// `text` with control characters, '\\' and non-ASCII bytes escaped (\n, \x1b…): one line.
std::string printable(std::string_view text);

// printable(text) cut to at most `width` characters (ending in "~" when cut) and padded to
// exactly `width`: a table column that stays aligned.
std::string table_cell(std::string_view text, std::size_t width);

}  // namespace vmshadow::cli
