// SPDX-License-Identifier: MIT
#include "export/process.h"

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

#include "common/unique_fd.h"

namespace vmshadow::exporter {
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

std::string last_line_of(const std::string& text) {
    std::istringstream in(text);
    std::string line, last;
    while (std::getline(in, line))
        if (!line.empty()) last = line;
    return last;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

Result<CommandOutput> run_command(const std::vector<std::string>& argv) {
    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return fail(ErrorKind::io, "pipe failed");
    UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) return fail(ErrorKind::io, "pipe failed");
    UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
    auto args = c_argv(argv);
    pid_t pid = ::fork();
    if (pid < 0) return fail(ErrorKind::io, std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
        int in = ::open("/dev/null", O_RDONLY);
        ::dup2(in, 0);
        ::dup2(out_w.get(), 1);
        ::dup2(err_w.get(), 2);
        ::execvp(args[0], args.data());
        _exit(127);
    }
    out_w.reset();
    err_w.reset();
    CommandOutput result;
    pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    int open_fds = 2;
    char buffer[8192];
    while (open_fds > 0) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
            if (n > 0) {
                sinks[i]->append(buffer, static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (result.exit_code == 127 && result.err.empty())
        return fail(ErrorKind::unavailable, argv[0] + " could not be run (is it installed?)");
    return result;
}

Result<std::string> run_checked(const std::vector<std::string>& argv) {
    auto r = run_command(argv);
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

std::string last_line(const std::string& path) {
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
                std::string why = last_line(o.log);
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
            std::string why = last_line(o.log);
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

}  // namespace vmshadow::exporter
