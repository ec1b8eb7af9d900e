// SPDX-License-Identifier: MIT
#pragma once
// run_command: run a program to completion with a deadline, capturing its output — the one
// way every layer runs a host program (exec writers, qemu-img, the mount's tools).
//
// This module is: posix_spawn of argv (PATH lookup when argv[0] has no '/') in a NEW
// PROCESS GROUP, stdin from /dev/null, stdout and stderr captured through pipes (up to
// kMaxCapture bytes each), signal mask and dispositions reset to defaults. When the
// deadline passes or stop is requested: SIGTERM to the whole group, SIGKILL to the group
// after `kill_grace`, then reap. When the program exits by itself, whatever it left behind
// in its group is SIGKILLed too (it would hold our pipes). No zombies: every child is
// reaped before run_command returns, on every path — or, if even SIGKILL has not ended it
// within 10 s (stuck in the kernel), by common/process's keeper once it ends. A grandchild that
// leaves the group (setsid) is out of reach; we stop reading its output shortly after the program
// ends. This module is not: a shell; nothing is interpreted; nor a way to start servers or daemons
// (common/process.h, whose run_tool is the front door to this runner).
//
// Thread-safety: safe to call from several threads at once (pipes are O_CLOEXEC, so a
// concurrent spawn never inherits another command's pipe).

#include <chrono>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow {

struct CommandResult {
    enum class Ending {
        exited,     // exit_code is valid
        signalled,  // killed by `signal`, not by us
        timed_out,  // we killed it: deadline passed
        cancelled,  // we killed it: stop was requested before the deadline
    };
    Ending ending = Ending::exited;
    int exit_code = -1;
    int signal = 0;
    std::string stdout_text;
    std::string stderr_text;
    bool truncated = false;  // output beyond kMaxCapture was dropped
    std::chrono::milliseconds duration{0};
};

inline constexpr std::size_t kMaxCapture = 1 << 20;

struct RunLimits {
    // The complete environment ("KEY=VALUE"); nullopt: this process's.
    std::optional<std::vector<std::string>> environment;
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
    std::stop_token stop;  // a stop request ends the command like the deadline (cancelled)
    std::chrono::milliseconds kill_grace = std::chrono::seconds(2);
};

// Fails only if the program could not be started (not found, not executable, no
// resources); the program's own failure is in CommandResult.
Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  const RunLimits& limits = {});

// The last non-empty line of `text`, trimmed (for error messages).
std::string last_line_of(const std::string& text);

}  // namespace vmshadow
