// SPDX-License-Identifier: MIT
#include "common/error.h"

#include "common/enum_names.h"

namespace vmshadow {

namespace {

constexpr auto kKindNames = enum_names<ErrorKind>(
    {
        {ErrorKind::internal, "internal"},
        {ErrorKind::invalid_argument, "invalid_argument"},
        {ErrorKind::not_found, "not_found"},
        {ErrorKind::unavailable, "unavailable"},
        {ErrorKind::timeout, "timeout"},
        {ErrorKind::conflict, "conflict"},
        {ErrorKind::locked, "locked"},
        {ErrorKind::corruption, "corruption"},
        {ErrorKind::io, "io"},
        {ErrorKind::unsupported, "unsupported"},
        {ErrorKind::permission, "permission"},
        {ErrorKind::cancelled, "cancelled"},
    },
    "internal");

}  // namespace

std::string_view kind_name(ErrorKind kind) {
    return kKindNames.name(kind);
}

std::optional<ErrorKind> parse_kind_name(std::string_view name) {
    return kKindNames.parse(name);
}

Error Error::with_context(std::string_view context) const {
    // Layers each name what they handle, so the same name can arrive twice ("vm 'a', disk
    // vdb" around "disk vdb: no space"): a message that already starts with the context, or
    // with its tail after a ", ", keeps that once.
    std::string_view rest = message_;
    for (std::size_t from = 0;;) {
        std::string_view tail = context.substr(from);
        if (rest.size() > tail.size() + 1 && rest.starts_with(tail) &&
            rest.substr(tail.size(), 2) == ": ") {
            rest.remove_prefix(tail.size() + 2);
            break;
        }
        auto comma = context.find(", ", from);
        if (comma == std::string_view::npos) break;
        from = comma + 2;
    }
    std::string message(context);
    message += ": ";
    message += rest;
    return Error(kind_, std::move(message));
}

}  // namespace vmshadow
