// SPDX-License-Identifier: MIT
#include "virt/qemu_img.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/unique_fd.h"

extern char** environ;

namespace vmshadow::virt {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::seconds kQemuImgTimeout{60};

// A spawned child: killed (SIGKILL) and reaped by the destructor unless waited for.
class Child {
  public:
    explicit Child(pid_t pid) : pid_(pid) {}
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            (void)wait();
        }
    }
    // Exit status as waitpid reports it.
    int wait() {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return status;
    }

  private:
    pid_t pid_;
};

struct Output {
    int exit_code = -1;
    std::string out;
    std::string err;
};

std::string first_line(const std::string& text) {
    std::string line = text.substr(0, text.find('\n'));
    return line.empty() ? "no message" : line;
}

// Runs argv (argv[0] looked up in PATH), collecting stdout and stderr, for at most `timeout`.
Result<Output> run(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
    int out_pipe[2];
    int err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return fail(ErrorKind::io, "pipe for " + argv[0]);
    UniqueFd out_read(out_pipe[0]), out_write(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) return fail(ErrorKind::io, "pipe for " + argv[0]);
    UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
    posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        return fail(ErrorKind::unavailable,
                    argv[0] + " could not be started (install qemu-utils): " + strerror(rc));
    }
    Child child(pid);
    out_write.reset();
    err_write.reset();

    Output result;
    auto deadline = Clock::now() + timeout;
    while (out_read || err_read) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            return fail(ErrorKind::timeout, argv[0] + " " + argv[1] + " did not finish within " +
                                                std::to_string(timeout.count()) + " s");
        }
        pollfd fds[2] = {{out_read.get(), POLLIN, 0}, {err_read.get(), POLLIN, 0}};
        int n = ::poll(fds, 2, static_cast<int>(left.count()));
        if (n < 0 && errno != EINTR) return fail(ErrorKind::io, "poll on " + argv[0]);
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            char buf[4096];
            ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
            if (got > 0) {
                (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(got));
            } else if (got == 0 || errno != EINTR) {
                (i == 0 ? out_read : err_read).reset();
            }
        }
    }
    int status = child.wait();
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

Result<std::string> run_checked(const std::vector<std::string>& argv, const std::string& what) {
    auto out = run(argv, kQemuImgTimeout);
    if (!out) return fail(out.error().with_context(what));
    if (out->exit_code != 0) return fail(ErrorKind::io, what + ": " + first_line(out->err));
    return std::move(out->out);
}

}  // namespace

Status create_qcow2(const std::string& path, std::uint64_t virtual_size) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
        return fail(ErrorKind::conflict, "scratch image " + path + " exists already");
    }
    auto done = run_checked({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                             "--", path, std::to_string(virtual_size)},
                            "create scratch image " + path);
    if (!done) return fail(done.error());
    return {};
}

Result<std::vector<ImageBitmap>> image_bitmaps(const std::string& path, bool force_share) {
    std::vector<std::string> argv = {"qemu-img", "info", "--output=json"};
    if (force_share) argv.push_back("-U");
    argv.push_back("--");
    argv.push_back(path);
    auto out = run_checked(argv, "read bitmaps of " + path);
    if (!out) return fail(out.error());
    auto info = nlohmann::json::parse(*out, nullptr, false);
    if (info.is_discarded()) {
        return fail(ErrorKind::io, "read bitmaps of " + path + ": qemu-img printed no JSON");
    }
    std::vector<ImageBitmap> bitmaps;
    const auto& data = info.value("format-specific", nlohmann::json::object())
                           .value("data", nlohmann::json::object());
    for (const auto& b : data.value("bitmaps", nlohmann::json::array())) {
        ImageBitmap bitmap{b.value("name", ""), false, false};
        for (const auto& flag : b.value("flags", nlohmann::json::array())) {
            if (flag == "in-use") bitmap.in_use = true;
            if (flag == "auto") bitmap.auto_ = true;
        }
        bitmaps.push_back(std::move(bitmap));
    }
    return bitmaps;
}

Status remove_image_bitmap(const std::string& path, const std::string& bitmap) {
    auto done = run_checked({"qemu-img", "bitmap", "--remove", "--", path, bitmap},
                            "remove bitmap '" + bitmap + "' from " + path);
    if (!done) return fail(done.error());
    return {};
}

}  // namespace vmshadow::virt
