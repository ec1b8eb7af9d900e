// SPDX-License-Identifier: MIT
#include "lab/lab_process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

extern char** environ;

namespace vmshadow::lab {
namespace {

// Closes both ends on every path out of run_process.
struct Pipe {
    std::array<int, 2> fd{-1, -1};
    ~Pipe() {
        for (int f : fd)
            if (f >= 0) close(f);
    }
    void close_end(int i) {
        if (fd[i] >= 0) close(fd[i]);
        fd[i] = -1;
    }
};

std::string describe(const std::vector<std::string>& argv) {
    std::string s;
    for (const auto& a : argv) {
        if (!s.empty()) s += ' ';
        s += a;
    }
    return s;
}

std::string tail(const std::string& text, std::size_t max) {
    std::string t = text;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    if (t.size() > max) t = "..." + t.substr(t.size() - max);
    return t;
}

}  // namespace

Result<ProcessOutput> run_process(const std::vector<std::string>& argv) {
    if (argv.empty()) return fail(ErrorKind::internal, "run_process: empty argv");
    Pipe out;
    Pipe err;
    if (pipe2(out.fd.data(), O_CLOEXEC) < 0 || pipe2(err.fd.data(), O_CLOEXEC) < 0) {
        return fail(ErrorKind::io, std::string("pipe: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out.fd[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err.fd[1], STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        return fail(ErrorKind::not_found, "cannot run " + argv[0] + ": " + std::strerror(rc));
    }
    out.close_end(1);
    err.close_end(1);

    // Both pipes are drained together so a chatty stderr can't block the child on stdout.
    ProcessOutput result;
    std::array<pollfd, 2> fds{pollfd{out.fd[0], POLLIN, 0}, pollfd{err.fd[0], POLLIN, 0}};
    std::array<std::string*, 2> sinks{&result.out, &result.err};
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (std::size_t i = 0; i < fds.size(); ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            std::array<char, 65536> buf;
            ssize_t n = read(fds[i].fd, buf.data(), buf.size());
            if (n > 0) {
                sinks[i]->append(buf.data(), static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return fail(ErrorKind::internal, "waitpid: " + describe(argv));
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

Result<std::string> run_checked(const std::vector<std::string>& argv) {
    auto r = run_process(argv);
    if (!r) return fail(r.error());
    if (r->exit_code != 0) {
        return fail(ErrorKind::internal, "`" + describe(argv) + "` exited with " +
                                             std::to_string(r->exit_code) + ": " +
                                             tail(r->err, 600));
    }
    return std::move(r->out);
}

}  // namespace vmshadow::lab
