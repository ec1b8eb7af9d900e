// SPDX-License-Identifier: MIT
#include "common/error.h"

namespace vmshadow {

std::string_view kind_name(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::internal:
            return "internal";
        case ErrorKind::invalid_argument:
            return "invalid_argument";
        case ErrorKind::not_found:
            return "not_found";
        case ErrorKind::unavailable:
            return "unavailable";
        case ErrorKind::timeout:
            return "timeout";
        case ErrorKind::conflict:
            return "conflict";
        case ErrorKind::locked:
            return "locked";
        case ErrorKind::corruption:
            return "corruption";
        case ErrorKind::io:
            return "io";
        case ErrorKind::unsupported:
            return "unsupported";
        case ErrorKind::permission:
            return "permission";
        case ErrorKind::cancelled:
            return "cancelled";
    }
    return "internal";
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
