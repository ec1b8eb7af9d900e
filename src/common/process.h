// SPDX-License-Identifier: MIT
#pragma once
// Host programs as the mount, verify and instant recovery drive them (nbdkit, nbdfuse,
// losetup, blkid, sfdisk, mount): run to completion, or start as background daemons that
// outlive vmshadow.
//
// This module is: run_tool (child_process.h's runner, its output as text) and fork/exec
// of daemons without a shell (argv as given, looked up in PATH), output
// captured, and daemons identified by pid + kernel start time so that a later process (the
// `umount`) can tell a daemon from an unrelated process that reused its pid. It is not: a
// supervisor; daemons are reparented to init when vmshadow exits.
//
// Errors: a program that cannot start is unavailable ("nbdfuse not found: install
// libnbd-bin"); run_checked turns a non-zero exit into an error holding the command and the
// last line of its stderr.
//
// Thread-safety: functions only; call from one thread (they fork).

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow {

struct CommandOutput {
    int exit_code = -1;  // 128 + signal when killed
    std::string out, err;
};

Result<CommandOutput> run_tool(const std::vector<std::string>& argv);
// stdout of a command that must succeed.
Result<std::string> run_checked(const std::vector<std::string>& argv);

// A process known by pid and start time (field 22 of /proc/PID/stat).
struct ProcessId {
    pid_t pid = -1;
    std::string start_time;
};

std::string process_start_time(pid_t pid);
// Running (not a zombie) and still the same process.
bool process_alive(const ProcessId& process);

struct DaemonOptions {
    std::vector<std::string> argv;
    std::vector<std::string> env;  // "NAME=value" added to the environment
    std::string log;               // stdout and stderr go here
    std::string pidfile;           // the daemon writes it when it is ready
    std::chrono::milliseconds timeout{30000};
    bool forks = false;  // argv forks the daemon and exits 0 (nbdkit without -f)
};

// Starts argv in a new session and waits until its pidfile names a live process. If it
// exits (with an error, when it `forks`) or times out first, the error carries the last line of its
// log (and a timed-out daemon is killed).
Result<ProcessId> start_daemon(const DaemonOptions& options);

// SIGTERM, up to `grace` for it to go, then SIGKILL. Succeeds when the process is gone.
Status stop_process(const ProcessId& process, std::chrono::milliseconds grace);

// The last non-empty line of a text file ("" when unreadable).
std::string last_line_in_file(const std::string& path);

}  // namespace vmshadow
