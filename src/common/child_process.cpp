// SPDX-License-Identifier: MIT
#include "common/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "common/process_detail.h"
#include "common/unique_fd.h"

namespace vmshadow {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::chrono::seconds kReapLimit{10};

// glibc 2.36's <sys/pidfd.h> lacks extern "C"; call the system call directly. -1 (no
// pidfd: kernel < 5.3) falls back to polling.
int open_pidfd(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// Owns a spawned child: SIGKILLs its group and reaps it unless it was reaped already.
class SpawnedChild {
  public:
    explicit SpawnedChild(pid_t pid) : pid_(pid), pidfd_(open_pidfd(pid)) {}
    SpawnedChild(const SpawnedChild&) = delete;
    SpawnedChild& operator=(const SpawnedChild&) = delete;
    ~SpawnedChild() {
        if (reaped_) return;
        kill_group(SIGKILL);
        (void)reap();
    }

    int pidfd() const { return pidfd_.get(); }
    void kill_group(int sig) const { ::kill(-pid_, sig); }

    // True once the child has exited; it stays a zombie (so its pid and group id cannot
    // be reused) until reap().
    bool exited() const {
        siginfo_t info{};
        if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
            return errno == ECHILD;
        }
        return info.si_pid == pid_;
    }
    // Waits for exit up to `until`.
    bool wait_exit_until(clock::time_point until) const {
        while (!exited()) {
            if (clock::now() >= until) return false;
            if (pidfd_) {
                pollfd p{pidfd_.get(), POLLIN, 0};
                auto left = std::chrono::duration_cast<milliseconds>(until - clock::now());
                ::poll(&p, 1, static_cast<int>(std::max<long>(1, left.count())));
            } else {
                std::this_thread::sleep_for(milliseconds(5));
            }
        }
        return true;
    }
    // The wait status; a child that even SIGKILL has not ended within kReapLimit (stuck in
    // the kernel) is left to common/process's keeper to reap, and reads as killed.
    int reap() {
        reaped_ = true;
        if (!wait_exit_until(clock::now() + kReapLimit)) {
            process_detail::reap_later(pid_);
            return SIGKILL;  // as WIFSIGNALED
        }
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        return status;
    }

  private:
    pid_t pid_;
    UniqueFd pidfd_;
    bool reaped_ = false;
};

struct Pipe {
    UniqueFd read;
    UniqueFd write;
};

Result<Pipe> make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        return fail(ErrorKind::io, std::string("pipe: ") + std::strerror(errno));
    }
    return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Reads what is available from `fd` into `out`; returns false at EOF or error.
bool drain(int fd, std::string& out, bool& truncated) {
    char buffer[8192];
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    if (n == 0) return false;
    std::size_t room = kMaxCapture > out.size() ? kMaxCapture - out.size() : 0;
    std::size_t keep = std::min(room, static_cast<std::size_t>(n));
    out.append(buffer, keep);
    if (keep < static_cast<std::size_t>(n)) truncated = true;
    return true;
}

class SpawnAttributes {
  public:
    SpawnAttributes() {
        ::posix_spawnattr_init(&attr_);
        ::posix_spawn_file_actions_init(&actions_);
    }
    ~SpawnAttributes() {
        ::posix_spawnattr_destroy(&attr_);
        ::posix_spawn_file_actions_destroy(&actions_);
    }
    SpawnAttributes(const SpawnAttributes&) = delete;
    SpawnAttributes& operator=(const SpawnAttributes&) = delete;

    // New process group, default signals, stdin /dev/null, stdout/stderr to the pipes.
    int setup(int out_fd, int err_fd) {
        sigset_t empty, all;
        sigemptyset(&empty);
        sigfillset(&all);
        int rc = ::posix_spawnattr_setflags(
            &attr_, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        if (rc == 0) rc = ::posix_spawnattr_setpgroup(&attr_, 0);
        if (rc == 0) rc = ::posix_spawnattr_setsigmask(&attr_, &empty);
        if (rc == 0) rc = ::posix_spawnattr_setsigdefault(&attr_, &all);
        if (rc == 0) {
            rc = ::posix_spawn_file_actions_addopen(&actions_, 0, "/dev/null", O_RDONLY, 0);
        }
        if (rc == 0) rc = ::posix_spawn_file_actions_adddup2(&actions_, out_fd, 1);
        if (rc == 0) rc = ::posix_spawn_file_actions_adddup2(&actions_, err_fd, 2);
        return rc;
    }
    const posix_spawnattr_t* attr() const { return &attr_; }
    const posix_spawn_file_actions_t* actions() const { return &actions_; }

  private:
    posix_spawnattr_t attr_;
    posix_spawn_file_actions_t actions_;
};

std::vector<char*> c_strings(const std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
    out.push_back(nullptr);
    return out;
}

// Reads both pipes until the child exits or the deadline is over; returns true if exited.
bool pump_until_exit(SpawnedChild& child, Pipe& out, Pipe& err, CommandResult& result,
                     const RunLimits& limits) {
    bool out_open = true, err_open = true;
    while (!child.exited()) {
        auto now = clock::now();
        if (now >= limits.deadline || limits.stop.stop_requested()) return false;
        pollfd fds[3];
        nfds_t n = 0;
        if (out_open) fds[n++] = {out.read.get(), POLLIN, 0};
        if (err_open) fds[n++] = {err.read.get(), POLLIN, 0};
        if (child.pidfd() >= 0) fds[n++] = {child.pidfd(), POLLIN, 0};
        // Wake up regularly to notice a stop request; the pidfd wakes us on exit.
        long left = limits.deadline == clock::time_point::max()
                        ? 50
                        : std::chrono::ceil<milliseconds>(limits.deadline - now).count();
        auto wait = std::min<long>(left, child.pidfd() >= 0 ? 50 : 5);
        if (::poll(fds, n, static_cast<int>(std::max<long>(wait, 1))) < 0 && errno != EINTR) {
            std::this_thread::sleep_for(milliseconds(5));
        }
        for (nfds_t i = 0; i < n; ++i) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (out_open && fds[i].fd == out.read.get()) {
                out_open = drain(fds[i].fd, result.stdout_text, result.truncated);
            } else if (err_open && fds[i].fd == err.read.get()) {
                err_open = drain(fds[i].fd, result.stderr_text, result.truncated);
            }
        }
    }
    return true;
}

// After the child is gone (and its group killed): read what is left, briefly.
void drain_rest(Pipe& out, Pipe& err, CommandResult& result) {
    auto until = clock::now() + milliseconds(200);
    bool out_open = true, err_open = true;
    while ((out_open || err_open) && clock::now() < until) {
        pollfd fds[2];
        nfds_t n = 0;
        if (out_open) fds[n++] = {out.read.get(), POLLIN, 0};
        if (err_open) fds[n++] = {err.read.get(), POLLIN, 0};
        if (::poll(fds, n, 20) <= 0) continue;
        for (nfds_t i = 0; i < n; ++i) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (fds[i].fd == out.read.get()) {
                out_open = drain(fds[i].fd, result.stdout_text, result.truncated);
            } else {
                err_open = drain(fds[i].fd, result.stderr_text, result.truncated);
            }
        }
    }
}

}  // namespace

Result<CommandResult> run_command(const std::vector<std::string>& argv, const RunLimits& limits) {
    if (argv.empty()) return fail(ErrorKind::invalid_argument, "empty command");
    auto out = make_pipe();
    if (!out) return fail(out.error());
    auto err = make_pipe();
    if (!err) return fail(err.error());
    SpawnAttributes spawn;
    if (int rc = spawn.setup(out->write.get(), err->write.get()); rc != 0) {
        return fail(ErrorKind::internal, std::string("posix_spawn setup: ") + std::strerror(rc));
    }
    auto args = c_strings(argv);
    std::vector<char*> own_env;
    if (limits.environment) own_env = c_strings(*limits.environment);
    char** env = limits.environment ? own_env.data() : environ;
    const auto started = clock::now();
    pid_t pid = -1;
    bool search = argv[0].find('/') == std::string::npos;
    int rc = search ? ::posix_spawnp(&pid, args[0], spawn.actions(), spawn.attr(), args.data(), env)
                    : ::posix_spawn(&pid, args[0], spawn.actions(), spawn.attr(), args.data(), env);
    if (rc != 0) {
        ErrorKind kind = rc == ENOENT   ? ErrorKind::not_found
                         : rc == EACCES ? ErrorKind::permission
                                        : ErrorKind::unavailable;
        return fail(kind, "cannot run " + argv[0] + ": " + std::strerror(rc));
    }
    SpawnedChild child(pid);
    out->write.reset();
    err->write.reset();

    CommandResult result;
    if (!pump_until_exit(child, *out, *err, result, limits)) {
        result.ending = clock::now() >= limits.deadline ? CommandResult::Ending::timed_out
                                                        : CommandResult::Ending::cancelled;
        child.kill_group(SIGTERM);
        if (!child.wait_exit_until(clock::now() + limits.kill_grace)) child.kill_group(SIGKILL);
    }
    // The leader is a zombie now (or about to be): its group id cannot be reused yet, so
    // killing the group only hits what the command left behind.
    child.wait_exit_until(clock::now() + limits.kill_grace);
    child.kill_group(SIGKILL);
    int status = child.reap();
    drain_rest(*out, *err, result);
    result.duration = std::chrono::duration_cast<milliseconds>(clock::now() - started);
    if (result.ending == CommandResult::Ending::exited) {
        if (WIFEXITED(status)) {
            result.exit_code = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
            result.ending = CommandResult::Ending::signalled;
            result.signal = WTERMSIG(status);
        }
    }
    return result;
}

std::string last_line_of(const std::string& text) {
    std::size_t end = text.find_last_not_of(" \t\r\n");
    if (end == std::string::npos) return {};
    std::size_t begin = text.rfind('\n', end);
    begin = begin == std::string::npos ? 0 : begin + 1;
    std::string line = text.substr(begin, end - begin + 1);
    std::size_t first = line.find_first_not_of(" \t");
    return first == std::string::npos ? std::string() : line.substr(first);
}

}  // namespace vmshadow
