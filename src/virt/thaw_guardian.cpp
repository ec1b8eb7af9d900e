// SPDX-License-Identifier: MIT
#include "virt/thaw_guardian.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <thread>
#include <vector>

#include "virt/connection.h"
#include "virt/guest_agent.h"
#include "virt/libvirt_error.h"

extern char** environ;

namespace vmshadow::virt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kReadyTimeout{15000};
constexpr int kActAttempts = 3;

Error errno_error(const std::string& what) {
    return Error(ErrorKind::io, what + ": " + std::strerror(errno));
}

// Waits for `fd` to be readable until `deadline`; returns false on timeout.
bool wait_readable(int fd, Clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(left));
        if (r > 0) return true;
        if (r == 0) return false;
        if (errno != EINTR) return true;  // let the read report the error
    }
}

Status write_byte(int fd, char c) {
    for (;;) {
        if (::write(fd, &c, 1) == 1) return {};
        if (errno != EINTR) return fail(errno_error("thaw guardian pipe"));
    }
}

const char* action_name(GuardianAction action) {
    return action == GuardianAction::thaw ? "thaw" : "resume";
}

std::vector<std::string> guardian_argv(const GuardianSpec& spec) {
    return {spec.executable,
            "__thaw-guardian",
            "--uuid",
            spec.domain_uuid,
            "--name",
            spec.domain_name,
            "--connect",
            spec.connect_uri,
            "--action",
            action_name(spec.action),
            "--arm-timeout-ms",
            std::to_string(spec.arm_timeout.count()),
            "--release-after-ms",
            std::to_string(spec.release_after.count())};
}

// One bounded attempt series to thaw or resume; returns what happened, for the log line.
Result<std::string> act(const Domain& domain, GuardianAction action) {
    Error last(ErrorKind::internal, "no attempt made");
    for (int attempt = 0; attempt < kActAttempts; ++attempt) {
        if (action == GuardianAction::thaw) {
            GuestAgent agent(domain, std::chrono::seconds(5));
            auto thawed = agent.thaw();
            if (thawed) return "thawed " + std::to_string(*thawed) + " filesystem(s)";
            last = thawed.error();
        } else {
            auto state = domain.state();
            if (state && *state != DomainState::paused) return std::string("was not paused");
            if (virDomainResume(domain.raw()) == 0) return std::string("resumed");
            last = libvirt_error(domain.label() + ": resume");
        }
        std::this_thread::sleep_for(milliseconds(500));
    }
    return fail(last);
}

}  // namespace

std::string current_executable() {
    std::vector<char> buf(4096);
    ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    if (n <= 0) return {};
    return std::string(buf.data(), static_cast<size_t>(n));
}

Result<ThawGuardian> ThawGuardian::start(const GuardianSpec& spec) {
    int to_child[2];
    int from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) < 0) return fail(errno_error("thaw guardian: pipe"));
    UniqueFd to_child_read(to_child[0]), to_child_write(to_child[1]);
    if (::pipe2(from_child, O_CLOEXEC) < 0) return fail(errno_error("thaw guardian: pipe"));
    UniqueFd from_child_read(from_child[0]), from_child_write(from_child[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child_read.get(), STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child_write.get(), STDOUT_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Its own session: a signal to vmshadow's process group (Ctrl-C, kill -9 -PGID) misses it.
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);

    std::vector<std::string> args = guardian_argv(spec);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, spec.executable.c_str(), &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        return fail(errno_error("thaw guardian: start " + spec.executable));
    }
    to_child_read.reset();
    from_child_write.reset();
    ThawGuardian guardian(pid, std::move(to_child_write));

    char ready = 0;
    if (!wait_readable(from_child_read.get(), Clock::now() + kReadyTimeout) ||
        ::read(from_child_read.get(), &ready, 1) != 1 || ready != 'R') {
        guardian.released_ = true;  // it never took charge; nothing for it to undo
        ::kill(pid, SIGKILL);
        return fail(ErrorKind::unavailable,
                    "vm '" + spec.domain_name +
                        "': the thaw guardian did not start, so the guest was not frozen");
    }
    return guardian;
}

ThawGuardian::ThawGuardian(ThawGuardian&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      to_guardian_(std::move(other.to_guardian_)),
      released_(other.released_) {}

ThawGuardian& ThawGuardian::operator=(ThawGuardian&& other) noexcept {
    if (this != &other) {
        to_guardian_.reset();
        reap();
        pid_ = std::exchange(other.pid_, -1);
        to_guardian_ = std::move(other.to_guardian_);
        released_ = other.released_;
    }
    return *this;
}

ThawGuardian::~ThawGuardian() {
    to_guardian_.reset();  // EOF: a guardian not released acts now
    reap();
}

void ThawGuardian::reap() {
    if (pid_ <= 0) return;
    // A released guardian exits at once; one that acts may take seconds and is left to
    // finish on its own (it is in its own session; init reaps it once we exit).
    auto deadline = Clock::now() + (released_ ? milliseconds(2000) : milliseconds(0));
    do {
        if (::waitpid(pid_, nullptr, WNOHANG) != 0) break;
        if (Clock::now() >= deadline) break;
        std::this_thread::sleep_for(milliseconds(10));
    } while (true);
    pid_ = -1;
}

Status ThawGuardian::armed() {
    return write_byte(to_guardian_.get(), 'F');
}

Status ThawGuardian::released() {
    auto s = write_byte(to_guardian_.get(), 'T');
    if (s) released_ = true;
    return s;
}

int run_thaw_guardian(const GuardianSpec& spec) {
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
    const std::string who = "vmshadow thaw guardian: vm '" + spec.domain_name + "': ";
    auto conn = Connection::open(spec.connect_uri);
    if (!conn) {
        std::cerr << who << conn.error().message() << std::endl;
        return 1;
    }
    auto domain = conn->lookup(spec.domain_uuid);
    if (!domain) {
        std::cerr << who << domain.error().message() << std::endl;
        return 1;
    }
    if (::write(STDOUT_FILENO, "R\n", 2) != 2) return 1;

    auto deadline = Clock::now() + spec.arm_timeout;
    bool armed = false;
    const char* why = "vmshadow did not report the freeze in time";
    for (;;) {
        if (!wait_readable(STDIN_FILENO, deadline)) {
            why = armed ? "the freeze was held past its time limit" : why;
            break;
        }
        char c = 0;
        ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            why = "vmshadow exited or gave up while the guest was frozen";
            break;
        }
        if (c == 'T') return 0;
        if (c == 'F' && !armed) {
            armed = true;
            deadline = Clock::now() + spec.release_after;
        }
    }
    auto done = act(*domain, spec.action);
    if (!done) {
        std::cerr << who << action_name(spec.action) << " failed (" << why
                  << "): " << done.error().message() << std::endl;
        return 1;
    }
    std::cerr << who << *done << " (" << why << ")" << std::endl;
    return 0;
}

}  // namespace vmshadow::virt
