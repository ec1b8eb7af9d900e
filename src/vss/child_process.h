// SPDX-License-Identifier: MIT
#pragma once
// run_command: run a program to completion with a deadline, capturing its output.
//
// This module is: posix_spawn of argv (PATH lookup when argv[0] has no '/') in a NEW
// PROCESS GROUP, stdin from /dev/null, stdout and stderr captured through pipes (up to
// kMaxCapture bytes each), signal mask and dispositions reset to defaults. When the
// deadline passes or stop is requested: SIGTERM to the whole group, SIGKILL to the group
// after `kill_grace`, then reap. When the program exits by itself, whatever it left behind
// in its group is SIGKILLed too (it would hold our pipes). No zombies: every child is
// reaped before run_command returns, on every path. A grandchild that leaves the group
// (setsid) is out of reach; we stop reading its output shortly after the program ends.
// This module is not: a shell; nothing is interpreted.
//
// Thread-safety: safe to call from several threads at once (pipes are O_CLOEXEC, so a
// concurrent spawn never inherits another command's pipe).

#include <chrono>
#include <string>
#include <vector>

#include "common/error.h"
#include "vss/event_deadline.h"

namespace vmshadow::vss {

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

// Fails only if the program could not be started (not found, not executable, no
// resources); the program's own failure is in CommandResult. `environment` is the
// complete environment ("KEY=VALUE").
Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  const std::vector<std::string>& environment,
                                  const EventDeadline& deadline,
                                  std::chrono::milliseconds kill_grace = std::chrono::seconds(2));

// The last non-empty line of `text`, trimmed (for error messages).
std::string last_line(const std::string& text);

}  // namespace vmshadow::vss
