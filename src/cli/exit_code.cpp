// SPDX-License-Identifier: MIT
#include "cli/exit_code.h"

namespace vmshadow::cli {

int exit_code_for(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::internal:
            return exit_internal;
        case ErrorKind::invalid_argument:
            return exit_usage;
        case ErrorKind::not_found:
            return exit_not_found;
        case ErrorKind::unavailable:
            return exit_unavailable;
        case ErrorKind::timeout:
            return exit_timeout;
        case ErrorKind::conflict:
            return exit_conflict;
        case ErrorKind::locked:
            return exit_locked;
        case ErrorKind::corruption:
            return exit_corruption;
        case ErrorKind::io:
            return exit_io;
        case ErrorKind::unsupported:
            return exit_unsupported;
        case ErrorKind::permission:
            return exit_permission;
        case ErrorKind::cancelled:
            return exit_cancelled;
    }
    return exit_internal;
}

std::string exit_code_table() {
    return "Exit codes:\n"
           "  0  success\n"
           "  1  internal error (a bug: please report it)\n"
           "  2  bad command line or invalid argument\n"
           "  3  not found (VM, restore point, repository, file)\n"
           "  4  unavailable (libvirtd, guest agent or NBD server did not answer)\n"
           "  5  timeout\n"
           "  6  conflict (name in use, VM running, another vmshadow process works on that VM)\n"
           "  7  locked (another vmshadow process holds the repository)\n"
           "  8  corruption (stored data failed a check)\n"
           "  9  I/O error or disk full\n"
           " 10  unsupported (platform or format version cannot do it)\n"
           " 11  permission (wrong password, missing rights)\n"
           " 12  cancelled (a writer vetoed, or interrupted)\n";
}

}  // namespace vmshadow::cli
