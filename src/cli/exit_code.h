// SPDX-License-Identifier: MIT
#pragma once
// The one place that maps error kinds to the process exit codes documented in README.md
// ("Exit codes") and in `vmshadow --help`. Change both together; scripts depend on them.

#include <string>

#include "common/error.h"

namespace vmshadow::cli {

enum ExitCode : int {
    exit_ok = 0,
    exit_internal = 1,
    exit_usage = 2,        // bad command line or invalid argument
    exit_not_found = 3,    // VM, restore point, repository or file not found
    exit_unavailable = 4,  // libvirtd, the guest agent or an NBD server did not answer
    exit_timeout = 5,
    exit_conflict = 6,      // name in use, VM running, another vmshadow process on that VM
    exit_locked = 7,        // repository locked by another process
    exit_corruption = 8,    // stored data failed a check
    exit_io = 9,            // filesystem or device error, disk full
    exit_unsupported = 10,  // the platform or a format version can't do it
    exit_permission = 11,   // wrong password, missing rights
    exit_cancelled = 12,    // a writer vetoed, or interrupted
};

int exit_code_for(ErrorKind kind);

// The exit-code table as printed at the end of `vmshadow --help`.
std::string exit_code_table();

}  // namespace vmshadow::cli
