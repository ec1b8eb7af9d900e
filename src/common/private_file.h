// SPDX-License-Identifier: MIT
#pragma once
// The rule for secret files (the daemon's TLS key, its token store, a password file): owned
// by the user the process runs as and neither readable nor writable by group or others.
// A file that breaks it is refused, not used, with a message saying how to fix it
// ("chmod 600 FILE"), as ssh refuses a private key others can read.
//
// Thread-safety: a free function.

#include <filesystem>

#include "common/error.h"

namespace vmshadow {

// permission when `file` breaks the rule, not_found when it does not exist.
Status check_private_file(const std::filesystem::path& file);

}  // namespace vmshadow
