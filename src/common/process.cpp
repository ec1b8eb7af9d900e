// SPDX-License-Identifier: MIT
#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/child_process.h"
#include "common/process_detail.h"
#include "common/unique_fd.h"

namespace vmshadow {
namespace {

std::string command_text(const std::vector<std::string>& argv) {
    std::string s;
    for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
    return s;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

namespace process_detail {

std::string stat_field(pid_t pid, int n) {
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    auto close = stat.rfind(')');  // the command name may hold spaces and ')'
    if (close == std::string::npos || close + 2 > stat.size()) return {};
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    for (int i = 3; i <= n; ++i)
        if (!(in >> field)) return {};
    return field;
}

}  // namespace process_detail

Result<CommandOutput> run_tool(const std::vector<std::string>& argv,
                               std::chrono::milliseconds timeout) {
    auto r = run_command(argv, {.deadline = std::chrono::steady_clock::now() + timeout});
    if (!r) {
        if (r.error().kind() == ErrorKind::not_found)
            return fail(ErrorKind::unavailable, argv[0] + " could not be run (is it installed?)");
        return std::unexpected(r.error());
    }
    if (r->ending == CommandResult::Ending::timed_out)
        return fail(ErrorKind::timeout,
                    command_text(argv) + " did not finish within " +
                        std::to_string(std::chrono::ceil<std::chrono::seconds>(timeout).count()) +
                        " s");
    CommandOutput out;
    out.exit_code = r->ending == CommandResult::Ending::signalled ? 128 + r->signal : r->exit_code;
    out.out = std::move(r->stdout_text);
    out.err = std::move(r->stderr_text);
    return out;
}

Result<std::string> run_checked(const std::vector<std::string>& argv,
                                std::chrono::milliseconds timeout) {
    auto r = run_tool(argv, timeout);
    if (!r) return std::unexpected(r.error());
    if (r->exit_code != 0) {
        std::string why = last_line_of(r->err);
        return fail(ErrorKind::io, command_text(argv) + " failed (exit " +
                                       std::to_string(r->exit_code) + ")" +
                                       (why.empty() ? "" : ": " + why));
    }
    return r->out;
}

std::string process_start_time(pid_t pid) {
    if (pid <= 0) return {};
    if (process_detail::stat_field(pid, 3) == "Z") return {};  // a zombie has ended
    return process_detail::stat_field(pid, 22);
}

bool process_alive(const ProcessId& process) {
    if (process.pid <= 0 || process.start_time.empty()) return false;
    return process_start_time(process.pid) == process.start_time;
}

bool process_running(pid_t pid) {
    if (pid <= 0) return false;
    if (!process_start_time(pid).empty()) return true;
    // Not in /proc as this user sees it (mounted hidepid) but there: running.
    return ::kill(pid, 0) != 0 && errno == EPERM;
}

ProcessId ProcessId::of(pid_t pid) {
    return {pid, process_start_time(pid)};
}

ProcessId ProcessId::self() {
    return of(::getpid());
}

bool ProcessId::alive() const {
    return process_alive(*this);
}

std::string last_line_in_file(const std::string& path) {
    return last_line_of(read_file(path));
}

namespace {

using process_detail::stat_field;

// Kills our child `pid` that never became a daemon; the keeper reaps it if it is stuck.
void abandon(pid_t pid) {
    ::kill(pid, SIGKILL);
    if (!process_detail::reap_within(pid, std::chrono::seconds(5))) process_detail::reap_later(pid);
}

// Every process in /proc but this one.
std::vector<pid_t> other_processes() {
    std::vector<pid_t> pids;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        pid_t pid = static_cast<pid_t>(std::atol(name.c_str()));
        if (pid != ::getpid()) pids.push_back(pid);
    }
    return pids;
}

bool in_session(pid_t pid, pid_t session) {
    return stat_field(pid, 6) == std::to_string(session);
}

// Waits until the daemon started as `leader` wrote its pidfile (it is ready) or exited or
// timed out.
Result<ProcessId> wait_until_ready(const DaemonOptions& o, const ProcessId& leader) {
    auto deadline = std::chrono::steady_clock::now() + o.timeout;
    bool launcher_running = true;
    for (;;) {
        int status = 0;
        if (launcher_running && ::waitpid(leader.pid, &status, WNOHANG) == leader.pid) {
            launcher_running = false;
            if (!o.forks || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                std::string why = last_line_in_file(o.log);
                return fail(ErrorKind::unavailable,
                            o.argv[0] + " exited at start" + (why.empty() ? "" : ": " + why));
            }
        }
        std::string text = read_file(o.pidfile);
        if (!text.empty()) {
            pid_t daemon = static_cast<pid_t>(std::atol(text.c_str()));
            ProcessId id{daemon, process_start_time(daemon)};
            if (process_alive(id) && in_session(daemon, leader.pid)) {
                if (launcher_running) process_detail::reap_later(leader.pid);
                return id;
            }
        }
        if (std::chrono::steady_clock::now() > deadline) {
            (void)stop_session(leader, std::chrono::milliseconds(0));
            if (launcher_running) abandon(leader.pid);
            std::string why = last_line_in_file(o.log);
            return fail(ErrorKind::timeout,
                        o.argv[0] + " did not become ready" + (why.empty() ? "" : ": " + why));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

}  // namespace

Result<ProcessId> start_daemon(const DaemonOptions& o) {
    if (!o.record && !o.dies_with_parent)
        return fail(ErrorKind::internal,
                    "daemon " + o.argv[0] + " would be neither recorded nor tied to vmshadow");
    ::unlink(o.pidfile.c_str());
    int go[2];
    if (::pipe2(go, O_CLOEXEC) != 0)
        return fail(ErrorKind::io, std::string("pipe failed: ") + std::strerror(errno));
    UniqueFd go_read(go[0]), go_write(go[1]);
    SpawnOptions spawn{.argv = o.argv,
                       .env = o.env,
                       .output = o.log,
                       .fds = {},
                       .new_session = true,
                       .dies_with_vmshadow = o.dies_with_parent};
    auto id = process_detail::fork_child(spawn, go_read.get(), go_write.get());
    if (!id) return std::unexpected(id.error());
    if (id->start_time.empty()) {
        abandon(id->pid);
        return fail(ErrorKind::internal, "cannot read the start time of " + o.argv[0]);
    }
    if (o.record) {
        if (auto st = o.record(*id); !st) {
            abandon(id->pid);
            return std::unexpected(st.error());
        }
    }
    char yes = 1;
    if (::write(go_write.get(), &yes, 1) != 1) {
        abandon(id->pid);
        return fail(ErrorKind::io,
                    std::string("cannot start ") + o.argv[0] + ": " + std::strerror(errno));
    }
    return wait_until_ready(o, *id);
}

std::vector<ProcessId> processes_with_argument(std::string_view prefix) {
    std::vector<ProcessId> found;
    for (pid_t pid : other_processes()) {
        std::string cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
        for (std::size_t at = 0; at < cmdline.size();) {
            std::size_t end = cmdline.find('\0', at);
            if (end == std::string::npos) end = cmdline.size();
            if (std::string_view(cmdline).substr(at, end - at).starts_with(prefix)) {
                ProcessId id{pid, process_start_time(pid)};
                if (process_alive(id)) found.push_back(id);
                break;
            }
            at = end + 1;
        }
    }
    return found;
}

Status stop_process(const ProcessId& process, std::chrono::milliseconds grace) {
    auto wait_gone = [&process](std::chrono::milliseconds limit) {
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (process_alive(process)) {
            // Our own child (a mount that fails half-way) is reaped here; others by init.
            ::waitpid(process.pid, nullptr, WNOHANG);
            if (std::chrono::steady_clock::now() > deadline) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        ::waitpid(process.pid, nullptr, WNOHANG);
        return true;
    };
    if (!process_alive(process)) return {};
    ::kill(process.pid, SIGTERM);
    if (wait_gone(grace)) return {};
    ::kill(process.pid, SIGKILL);
    if (wait_gone(std::chrono::seconds(5))) return {};
    return fail(ErrorKind::timeout, "process " + std::to_string(process.pid) + " did not exit");
}

Status stop_session(const ProcessId& leader, std::chrono::milliseconds grace) {
    if (leader.pid <= 0) return {};
    std::string now = process_start_time(leader.pid);
    if (!now.empty() && now != leader.start_time) return {};  // the pid is another's now
    std::vector<ProcessId> members;
    for (pid_t pid : other_processes())
        if (in_session(pid, leader.pid)) members.push_back({pid, process_start_time(pid)});
    for (const auto& m : members)
        if (auto st = stop_process(m, grace); !st) return st;
    return {};
}

}  // namespace vmshadow
