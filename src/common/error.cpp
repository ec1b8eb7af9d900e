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
    std::string message(context);
    message += ": ";
    message += message_;
    return Error(kind_, std::move(message));
}

}  // namespace vmshadow
