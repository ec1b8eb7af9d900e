// SPDX-License-Identifier: MIT
#pragma once
// Host programs as the mount, verify and instant recovery drive them (nbdkit, nbdfuse,
// losetup, blkid, sfdisk, mount): run to completion, or start as daemons.
//
// This module is: run_tool (child_process.h's runner, its output as text) and fork/exec
// of daemons without a shell (argv as given, looked up in PATH), output
// captured, and daemons identified by pid + kernel start time so that a later process (the
// `umount`, the next instant recovery) can tell a daemon from an unrelated process that
// reused its pid. It is not: a supervisor; daemons are reparented to init when vmshadow exits.
//
// The rule for daemons (a vmshadow killed at any instant leaves none it cannot find): a
// daemon either dies with vmshadow (`dies_with_parent`: PR_SET_PDEATHSIG, checked against
// a parent that died before it was set) or is recorded before its program runs (`record`:
// the child is forked, its pid and start time handed to the caller to write down durably,
// and only then does it exec; a vmshadow that dies first closes the pipe the child waits on
// and the child exits without running anything). The child leads a new session, and a
// daemon that forks into the background (nbdkit without -f: in the foreground it dies with
// its parent) stays in it, so the recorded identity — the session — finds the daemon
// whatever happened after the record (stop_session).
//
// Errors: a program that cannot start is unavailable ("nbdfuse not found: install
// libnbd-bin"); run_checked turns a non-zero exit into an error holding the command and the
// last line of its stderr.
//
// Thread-safety: functions only; call from one thread (they fork).

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
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
    // Called between fork and exec with the child's identity — the leader of the daemon's
    // session; the program runs only once it succeeds (a failure kills the child and is
    // returned). Write the record durably here.
    std::function<Status(const ProcessId&)> record;
    // SIGTERM to the daemon when the thread that started it exits (vmshadow killed included).
    bool dies_with_parent = false;
};

// Starts argv in a new session and waits until its pidfile names a live process of that
// session. If it exits (with an error, when it `forks`) or times out first, the error carries
// the last line of its log (and a timed-out daemon is killed).
// A daemon with neither `record` nor `dies_with_parent` is refused: nobody could find it.
Result<ProcessId> start_daemon(const DaemonOptions& options);

// Live processes one of whose arguments starts with `prefix` (e.g. "overlay=/dir/"): daemons
// an older vmshadow started without a record.
std::vector<ProcessId> processes_with_argument(std::string_view prefix);

// SIGTERM, up to `grace` for it to go, then SIGKILL. Succeeds when the process is gone.
Status stop_process(const ProcessId& process, std::chrono::milliseconds grace);

// Stops every process of the session `leader` led (as stop_process), whether the leader is
// still there or not. A leader's pid that now belongs to another process (another start
// time) means the session ended long ago: nothing is stopped.
Status stop_session(const ProcessId& leader, std::chrono::milliseconds grace);

// The last non-empty line of a text file ("" when unreadable).
std::string last_line_in_file(const std::string& path);

}  // namespace vmshadow
