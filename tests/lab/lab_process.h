// SPDX-License-Identifier: MIT
#pragma once
// Runs a host program for the lab (build-guest.sh, new-guest.sh, qemu-img, debugfs) and
// collects what it printed. Lab-internal: vmshadow itself has no process runner to reuse.
//
// No shell is involved: argv[0] is looked up in PATH and arguments are passed as they are.

#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::lab {

struct ProcessOutput {
    int exit_code = -1;  // 128 + signal number when it was killed by a signal
    std::string out;
    std::string err;
};

// Fails only when the program could not be started or waited for.
Result<ProcessOutput> run_process(const std::vector<std::string>& argv);

// Like run_process, but a non-zero exit is an error whose message holds the command and the
// end of its stderr; returns stdout.
Result<std::string> run_checked(const std::vector<std::string>& argv);

}  // namespace vmshadow::lab
