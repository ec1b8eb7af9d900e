// SPDX-License-Identifier: MIT
#pragma once
// os_error: the one map from an operating-system error (errno, or the std::error_code that
// std::filesystem reports) to an Error, so the same failure gives the same ErrorKind, and so
// the same exit code, in every layer.
//
// This module is: errno_kind (the table) and os_error (a message "<what>: <strerror>").
// This module is not: retry policy (EINTR on a restartable call is the caller's to retry), or
// the ErrorKind -> exit code map (src/cli/exit_code.cpp).
//
// Thread-safety: pure functions.

#include <string_view>
#include <system_error>

#include "common/error.h"

namespace vmshadow {

// The kind of an errno value: ENOENT is not_found, EACCES/EPERM permission, a full or failing
// disk io, EEXIST/EBUSY conflict, ETIMEDOUT timeout, ... ; anything not in the table is io.
ErrorKind errno_kind(int err);

// "<what>: <strerror(err)>" with errno_kind(err). `what` names the action and the thing
// ("rename /a/b to /a/c").
Error os_error(std::string_view what, int err);

// The same for an error_code from std::filesystem or std::system_error: a system or generic
// category is mapped by its errno value; any other category is io.
Error os_error(std::string_view what, std::error_code ec);

}  // namespace vmshadow
