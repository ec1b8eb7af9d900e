// SPDX-License-Identifier: MIT
#pragma once
// The one process module: every child process vmshadow starts is started here — host tools
// run to completion (run_tool / run_checked, through child_process.h's run_command), servers
// and helpers vmshadow drives while it runs (spawn: qemu-nbd, the thaw guardian), and daemons
// that must be found again later (start_daemon: nbdkit, nbdfuse) — and every process is
// identified here, by pid + kernel start time (process_start_time, process_alive), so that a
// later process (the `umount`, the next instant recovery, a lock's staleness rule) can tell
// a process from an unrelated one that reused its pid. A zombie counts as gone: it has
// ended, only nobody reaped it (this host's init doesn't).
//
// The rules (a vmshadow killed at any instant leaves nothing it cannot find, and no zombie
// while it lives):
// - A tool has a deadline (run_tool's `timeout`); past it its process group is killed.
// - A spawned child is owned by its Child handle: stopped (SIGTERM, grace, SIGKILL) and
//   reaped by its destructor, every wait bounded; or detach()ed: left to run and reaped by
//   the keeper (a thread of this module) once it exits.
// - A child that `dies_with_vmshadow` gets SIGTERM when the vmshadow PROCESS ends, however
//   (SIGKILL included): PR_SET_PDEATHSIG, which the kernel ties to the forking thread, so
//   every such fork is made by the keeper thread, which lives as long as the process; a
//   parent that died before the signal was set is noticed and the child exits.
// - A daemon either dies with vmshadow or is recorded before its program runs (`record`: the
//   child is forked, its pid and start time handed to the caller to write down durably, and
//   only then does it exec; a vmshadow that dies first closes the pipe the child waits on
//   and the child exits without running anything). The child leads a new session, and a
//   daemon that forks into the background (nbdkit without -f: in the foreground it dies with
//   its parent) stays in it, so the recorded identity — the session — finds the daemon
//   whatever happened after the record (stop_session).
// - A spawned child or daemon gets stdin /dev/null, stdout and stderr into its output file,
//   and the descriptors it is given (`fds`, which may replace those three); every other
//   descriptor is closed at exec, and its signal mask and dispositions are the defaults.
// - A child that must outlive vmshadow (the thaw guardian) leads its own session (a signal
//   to vmshadow's process group misses it) and is tied to nothing.
// It is not: a shell (argv as given, looked up in PATH); nor a supervisor that restarts.
//
// Errors: a program that cannot start is unavailable ("nbdfuse could not be run (is it
// installed?)"); run_checked turns a non-zero exit into an error holding the command and the
// last line of its stderr, and a tool past its deadline into a timeout.
//
// Thread-safety: safe to call from several threads; a Child belongs to one thread.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow {

struct CommandOutput {
    int exit_code = -1;  // 128 + signal when killed
    std::string out, err;
};

inline constexpr std::chrono::seconds kToolTimeout{120};

// Runs argv to completion; past `timeout` it is killed and a timeout error returned.
Result<CommandOutput> run_tool(const std::vector<std::string>& argv,
                               std::chrono::milliseconds timeout = kToolTimeout);
// stdout of a command that must succeed.
Result<std::string> run_checked(const std::vector<std::string>& argv,
                                std::chrono::milliseconds timeout = kToolTimeout);

// A process known by pid and start time (field 22 of /proc/PID/stat).
struct ProcessId {
    pid_t pid = -1;
    std::string start_time;

    // The process that now has `pid` ({pid, ""} when none, or a zombie).
    static ProcessId of(pid_t pid);
    static ProcessId self();
    // Running (not a zombie) and still the same process: same pid, same start time.
    bool alive() const;
};

// Field 22 of /proc/PID/stat (clock ticks after boot); "" when no such process runs — a
// zombie included — or it cannot be seen.
std::string process_start_time(pid_t pid);
bool process_alive(const ProcessId& process);
// Whether `pid` names a running process, whichever: a record without a start time (older
// vmshadow, a temp file's name) can tell no more. A process hidden from this user (EPERM)
// counts as running.
bool process_running(pid_t pid);

// A child process's descriptor: our `fd` becomes the child's `as` (0, 1, 2 included).
struct InheritedFd {
    int fd;
    int as;
};

struct SpawnOptions {
    std::vector<std::string> argv;
    std::vector<std::string> env;     // "NAME=value" added to (or replacing in) the environment
    std::string output;               // stdout and stderr appended here; "" = /dev/null
    std::vector<InheritedFd> fds;     // besides these (and stdin /dev/null) nothing is inherited
    bool new_session = false;         // out of reach of signals to vmshadow's process group
    bool dies_with_vmshadow = false;  // SIGTERM when the vmshadow process ends, however
};

// A started child process, owned: see the rules above. Movable, not copyable.
class Child {
  public:
    Child() = default;
    Child(Child&& other) noexcept;
    Child& operator=(Child&& other) noexcept;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child();  // stop(kStopGrace) unless exited or detached

    static constexpr std::chrono::seconds kStopGrace{5};

    const ProcessId& id() const { return id_; }
    // Started, not yet exited (an exited child not reaped yet is no longer running).
    bool running() const;
    // Waits up to `deadline`; the exit code (128 + signal when killed) once it exited, and it
    // is reaped then. nullopt: still running at the deadline.
    std::optional<int> wait_until(std::chrono::steady_clock::time_point deadline);
    // SIGTERM, up to `grace` for it to exit, then SIGKILL; reaped. The exit code as above;
    // nullopt when not even SIGKILL ended it within seconds (it is then detached).
    std::optional<int> stop(std::chrono::milliseconds grace);
    // Leaves the child running; the keeper reaps it once it exits. id() stays valid.
    void detach();

  private:
    friend Result<Child> spawn(const SpawnOptions& options);
    explicit Child(ProcessId id) : id_(std::move(id)), owned_(id_.pid > 0) {}
    ProcessId id_;
    std::optional<int> exit_code_;  // set once reaped
    bool owned_ = false;            // ours to reap: started, not reaped nor detached
};

// Starts argv (see SpawnOptions); fails when it cannot be forked. A program that does not
// exist starts and exits 127 at once, its reason in `output`.
Result<Child> spawn(const SpawnOptions& options);

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
    // SIGTERM to the daemon when the vmshadow process ends (killed included).
    bool dies_with_parent = false;
};

// Starts argv in a new session and waits until its pidfile names a live process of that
// session. If it exits (with an error, when it `forks`) or times out first, the error carries
// the last line of its log (and a timed-out daemon is killed). The session leader, our
// child, is left to the keeper to reap.
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
