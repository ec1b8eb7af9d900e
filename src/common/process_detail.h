// SPDX-License-Identifier: MIT
#pragma once
// Inside common/'s process module only (process.cpp, spawn.cpp): the fork every child goes
// through, and the keeper's reaping.

#include <sys/types.h>

#include <chrono>
#include <string>

#include "common/process.h"

namespace vmshadow::process_detail {

// Forks (on the keeper thread) a child that execs options.argv. With hold_read >= 0 the
// child first waits for one byte on it (and exits without running anything at EOF);
// hold_write is the pipe's other end, which the child closes. The identity is read while the
// child cannot have been reaped, so it is complete even when the child exited already.
Result<ProcessId> fork_child(const SpawnOptions& options, int hold_read = -1, int hold_write = -1);

// Waits up to `limit` for our child `pid` to exit and reaps it; false when it still runs.
bool reap_within(pid_t pid, std::chrono::milliseconds limit);
// The keeper reaps our child `pid` once it exits.
void reap_later(pid_t pid);

// Field `n` (>= 3) of /proc/PID/stat whatever the process's state; "" when there is none.
std::string stat_field(pid_t pid, int n);

}  // namespace vmshadow::process_detail
