// SPDX-License-Identifier: MIT
#pragma once
// Runs the built vmshadow binary the way a user does, for integration tests.
// VMSHADOW_BINARY is the path CMake compiled in.

#include <sys/types.h>

#include <string>
#include <vector>

#include "lab/lab_process.h"

namespace vmshadow::testing {

// Runs `vmshadow ARGS...` to completion; exit_code -1 when it could not be started.
lab::ProcessOutput run_vmshadow(const std::vector<std::string>& args);

// Starts `vmshadow ARGS...` in a new process group and returns its pid (= pgid); stdout and
// stderr go to `output` (a file). For tests that kill its whole group midway, or act while
// it runs.
pid_t start_vmshadow_in_own_group(const std::vector<std::string>& args,
                                  const std::string& output = "/dev/null");

}  // namespace vmshadow::testing
