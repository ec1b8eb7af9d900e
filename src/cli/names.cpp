// SPDX-License-Identifier: MIT
#include "cli/names.h"

#include <cstdio>

namespace vmshadow::cli {
namespace {

bool allowed_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '+' || c == '-';
}

constexpr const char* kAllowed =
    "use 1-128 characters of A-Z a-z 0-9 . _ + -, not starting with '.' or '-'";

}  // namespace

std::string name_problem(std::string_view name) {
    std::string why;
    if (name.empty())
        why = "the name is empty";
    else if (name.size() > kMaxNameLength)
        why = "the name is " + std::to_string(name.size()) + " characters long";
    else if (name.front() == '.' || name.front() == '-')
        why = std::string("the name starts with '") + name.front() + "'";
    else
        for (char c : name)
            if (!allowed_char(c)) {
                why = "the name contains '" + printable(std::string_view(&c, 1)) + "'";
                break;
            }
    return why.empty() ? why : why + ": " + kAllowed;
}

CLI::Option* add_name_option(CLI::App& app, const std::string& name, std::string& value,
                             const std::string& help) {
    auto check = [](std::string& text) { return name_problem(text); };
    return app.add_option(name, value, help)
        ->type_name("NAME")
        ->check(CLI::Validator(check, "", "vmshadow-name"));
}

std::string printable(std::string_view text) {
    std::string out;
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        if (c == '\n')
            out += "\\n";
        else if (c == '\t')
            out += "\\t";
        else if (c == '\\')
            out += "\\\\";
        else if (u < 0x20 || u >= 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        } else
            out += c;
    }
    return out;
}

std::string table_cell(std::string_view text, std::size_t width) {
    std::string cell = printable(text);
    if (cell.size() > width) cell = cell.substr(0, width - 1) + "~";
    cell.resize(width, ' ');
    return cell;
}

}  // namespace vmshadow::cli
