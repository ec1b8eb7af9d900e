// SPDX-License-Identifier: MIT
#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/child_process.h"
#include "common/unique_fd.h"

namespace vmshadow {
namespace {

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
    std::vector<char*> out;
    for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
    out.push_back(nullptr);
    return out;
}

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

Result<CommandOutput> run_tool(const std::vector<std::string>& argv) {
    auto r = run_command(argv);
    if (!r) {
        if (r.error().kind() == ErrorKind::not_found)
            return fail(ErrorKind::unavailable, argv[0] + " could not be run (is it installed?)");
        return std::unexpected(r.error());
    }
    CommandOutput out;
    out.exit_code = r->ending == CommandResult::Ending::signalled ? 128 + r->signal : r->exit_code;
    out.out = std::move(r->stdout_text);
    out.err = std::move(r->stderr_text);
    return out;
}

Result<std::string> run_checked(const std::vector<std::string>& argv) {
    auto r = run_tool(argv);
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
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) return {};
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    // Fields after the command: state(3) ... starttime(22).
    for (int i = 3; i <= 22 && in >> field; ++i) {
        if (i == 3 && field == "Z") return {};  // a zombie has ended
        if (i == 22) return field;
    }
    return {};
}

bool process_alive(const ProcessId& process) {
    if (process.pid <= 0) return false;
    std::string now = process_start_time(process.pid);
    return !now.empty() && now == process.start_time;
}

std::string last_line_in_file(const std::string& path) {
    return last_line_of(read_file(path));
}

Result<ProcessId> start_daemon(const DaemonOptions& o) {
    ::unlink(o.pidfile.c_str());
    UniqueFd log(::open(o.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!log) return fail(ErrorKind::io, "cannot create " + o.log + ": " + std::strerror(errno));
    auto args = c_argv(o.argv);
    pid_t pid = ::fork();
    if (pid < 0) return fail(ErrorKind::io, std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
        ::setsid();  // not in vmshadow's session: a ^C or a killed terminal does not reach it
        int in = ::open("/dev/null", O_RDONLY);
        ::dup2(in, 0);
        ::dup2(log.get(), 1);
        ::dup2(log.get(), 2);
        for (const auto& kv : o.env) ::putenv(const_cast<char*>(kv.c_str()));
        ::execvp(args[0], args.data());
        std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
        _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + o.timeout;
    for (;;) {
        int status = 0;
        if (pid > 0 && ::waitpid(pid, &status, WNOHANG) == pid) {
            bool forked = o.forks && WIFEXITED(status) && WEXITSTATUS(status) == 0;
            pid = -1;
            if (!forked) {
                std::string why = last_line_in_file(o.log);
                return fail(ErrorKind::unavailable,
                            o.argv[0] + " exited at start" + (why.empty() ? "" : ": " + why));
            }
        }
        std::string text = read_file(o.pidfile);
        if (!text.empty()) {
            pid_t daemon = static_cast<pid_t>(std::atol(text.c_str()));
            ProcessId id{daemon, process_start_time(daemon)};
            if (process_alive(id)) return id;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            if (pid > 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, &status, 0);
            }
            std::string why = last_line_in_file(o.log);
            return fail(ErrorKind::timeout,
                        o.argv[0] + " did not become ready" + (why.empty() ? "" : ": " + why));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
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

}  // namespace vmshadow
