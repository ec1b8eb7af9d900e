// SPDX-License-Identifier: MIT
#include "common/os_error.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace vmshadow {

ErrorKind errno_kind(int err) {
    switch (err) {
        case ENOENT:
            return ErrorKind::not_found;
        case EACCES:
        case EPERM:
            return ErrorKind::permission;
        case EEXIST:
        case ENOTEMPTY:
        case EBUSY:
        case ETXTBSY:
            return ErrorKind::conflict;
        case ETIMEDOUT:
            return ErrorKind::timeout;
        // vmshadow retries EINTR on every restartable call; one that still reaches an Error
        // was a signal meant to stop us (SIGINT, SIGTERM): the run was interrupted.
        case EINTR:
            return ErrorKind::cancelled;
        // A path that cannot name what the caller needs: a file where a folder must be, a
        // link refused by O_NOFOLLOW, a name too long. The user gave the wrong path.
        case ENOTDIR:
        case EISDIR:
        case ELOOP:
        case ENAMETOOLONG:
            return ErrorKind::invalid_argument;
        case ENOSYS:
        case EOPNOTSUPP:
        case EXDEV:
            return ErrorKind::unsupported;
        case ECONNREFUSED:
        case ECONNRESET:
        case EHOSTUNREACH:
        case ENETUNREACH:
        case EPIPE:
            return ErrorKind::unavailable;
        // ENOSPC, EDQUOT, EIO, EROFS, EFBIG, ENOMEM, EAGAIN, ... : the disk or the host
        // failed. (EAGAIN is not `locked`: a held flock is seen, and named, by its caller.)
        default:
            return ErrorKind::io;
    }
}

Error os_error(std::string_view what, int err) {
    std::string message(what);
    message += ": ";
    message += std::strerror(err);
    return Error(errno_kind(err), std::move(message));
}

Error os_error(std::string_view what, std::error_code ec) {
    const auto& category = ec.category();
    if (category == std::generic_category() || category == std::system_category())
        return os_error(what, ec.value());
    std::string message(what);
    message += ": ";
    message += ec.message();
    return Error(ErrorKind::io, std::move(message));
}

}  // namespace vmshadow
