// SPDX-License-Identifier: MIT
#include "virt/thaw_guardian.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include "common/os_error.h"
#include "common/process.h"
#include "virt/connection.h"
#include "virt/guest_agent.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kReadyTimeout{15000};
constexpr int kActAttempts = 3;
constexpr int kArmedFd = 3;  // the guardian's fd of the shared armed word
constexpr std::size_t kArmedBytes = sizeof(std::int64_t);

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
        if (errno != EINTR) return fail(os_error("thaw guardian pipe", errno));
    }
}

const char* action_name(GuardianAction action) {
    return action == GuardianAction::thaw ? "thaw" : "resume";
}

std::vector<std::string> guardian_argv(const GuardianSpec& spec) {
    return {spec.executable,
            "__thaw-guardian",
            "--armed-fd",
            std::to_string(kArmedFd),
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
            std::to_string(spec.release_after.count()),
            "--settle-limit-ms",
            std::to_string(spec.settle_limit.count())};
}

std::atomic_ref<std::int64_t> armed_word(void* shared) {
    return std::atomic_ref<std::int64_t>(*static_cast<std::int64_t*>(shared));
}

// One thaw attempt and a status question under one agent timeout; true once the agent
// answered "thawed". `parent_alive`: vmshadow may still thaw after us, relying on the agent
// response timeout it set for its freeze and thaw; ours then stays set instead of going back
// to libvirt's default (wait forever), and vmshadow's own hold resets it when its thaw returns.
bool thaw_once(const Domain& domain, bool parent_alive, int& thawed, Error& last) {
    GuestAgent agent(domain, std::chrono::seconds(5));
    auto hold = agent.hold_timeout();
    if (!hold) {
        last = hold.error();
        return false;
    }
    if (parent_alive) hold->keep();
    auto n = agent.thaw(*hold);
    if (n)
        thawed += *n;
    else
        last = n.error();
    auto status = agent.freeze_status(*hold);
    if (!status) {
        last = status.error();
        return false;
    }
    return *status == FreezeStatus::thawed;
}

// Thaws until the agent reports "thawed" (see the header for why a thaw alone is not enough).
Result<std::string> settle_thawed(const Domain& domain, milliseconds limit, bool parent_alive) {
    const auto started = Clock::now();
    Error last(ErrorKind::internal, "no attempt made");
    int thawed = 0;
    int attempts = 0;
    for (;;) {
        ++attempts;
        if (thaw_once(domain, parent_alive, thawed, last)) {
            auto waited = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started);
            return "thawed " + std::to_string(thawed) +
                   " filesystem(s); the agent reports "
                   "thawed after " +
                   std::to_string(attempts) + " attempt(s), " + std::to_string(waited.count()) +
                   " s";
        }
        auto state = domain.state();
        if (state && (*state == DomainState::shutoff || *state == DomainState::crashed))
            return std::string("the VM stopped: nothing left to thaw");
        if (Clock::now() - started >= limit) {
            return fail(ErrorKind::timeout,
                        "the agent did not report the guest thawed within " +
                            std::to_string(limit.count() / 1000) + " s (last: " + last.message() +
                            "); thaw it with `virsh domfsthaw " + domain.name() + "`");
        }
        std::this_thread::sleep_for(milliseconds(1000));
    }
}

Result<std::string> act(const Domain& domain, const GuardianSpec& spec, bool parent_alive) {
    if (spec.action == GuardianAction::thaw)
        return settle_thawed(domain, spec.settle_limit, parent_alive);
    Error last(ErrorKind::internal, "no attempt made");
    for (int attempt = 0; attempt < kActAttempts; ++attempt) {
        auto state = domain.state();
        if (state && *state != DomainState::paused) return std::string("was not paused");
        if (virDomainResume(domain.raw()) == 0) return std::string("resumed");
        last = libvirt_error(domain.label() + ": resume");
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
    if (::pipe2(to_child, O_CLOEXEC) < 0) return fail(os_error("thaw guardian: pipe", errno));
    UniqueFd to_child_read(to_child[0]), to_child_write(to_child[1]);
    if (::pipe2(from_child, O_CLOEXEC) < 0) return fail(os_error("thaw guardian: pipe", errno));
    UniqueFd from_child_read(from_child[0]), from_child_write(from_child[1]);
    // The armed word: shared memory both processes map.
    UniqueFd armed_fd(::memfd_create("vmshadow-thaw-guardian", MFD_CLOEXEC));
    if (!armed_fd || ::ftruncate(armed_fd.get(), kArmedBytes) < 0)
        return fail(os_error("thaw guardian: shared memory", errno));
    void* shared =
        ::mmap(nullptr, kArmedBytes, PROT_READ | PROT_WRITE, MAP_SHARED, armed_fd.get(), 0);
    if (shared == MAP_FAILED) return fail(os_error("thaw guardian: shared memory", errno));

    // Its own session: a signal to vmshadow's process group (Ctrl-C, kill -9 -PGID) misses
    // it, and it is not tied to vmshadow: it must act after vmshadow died. Its messages go to
    // vmshadow's stderr.
    auto child = spawn({.argv = guardian_argv(spec),
                        .fds = {{to_child_read.get(), STDIN_FILENO},
                                {from_child_write.get(), STDOUT_FILENO},
                                {STDERR_FILENO, STDERR_FILENO},
                                {armed_fd.get(), kArmedFd}},
                        .new_session = true});
    if (!child) {
        ::munmap(shared, kArmedBytes);
        return fail(child.error().with_context("thaw guardian: start " + spec.executable));
    }
    to_child_read.reset();
    from_child_write.reset();
    ThawGuardian guardian(std::move(*child), std::move(to_child_write));
    guardian.shared_ = shared;

    char ready = 0;
    if (!wait_readable(from_child_read.get(), Clock::now() + kReadyTimeout) ||
        ::read(from_child_read.get(), &ready, 1) != 1 || ready != 'R') {
        guardian.released_ = true;  // it never took charge; nothing for it to undo
        (void)guardian.child_.stop(milliseconds(0));
        return fail(ErrorKind::unavailable,
                    "vm '" + spec.domain_name +
                        "': the thaw guardian did not start, so the guest was not frozen");
    }
    return guardian;
}

ThawGuardian::ThawGuardian(ThawGuardian&& other) noexcept
    : child_(std::move(other.child_)),
      to_guardian_(std::move(other.to_guardian_)),
      shared_(std::exchange(other.shared_, nullptr)),
      released_(other.released_) {}

ThawGuardian& ThawGuardian::operator=(ThawGuardian&& other) noexcept {
    if (this != &other) {
        to_guardian_.reset();
        reap();
        unmap();
        child_ = std::move(other.child_);
        to_guardian_ = std::move(other.to_guardian_);
        shared_ = std::exchange(other.shared_, nullptr);
        released_ = other.released_;
    }
    return *this;
}

ThawGuardian::~ThawGuardian() {
    to_guardian_.reset();  // EOF: a guardian not released acts now
    reap();
    unmap();
}

void ThawGuardian::unmap() {
    if (shared_) ::munmap(shared_, kArmedBytes);
    shared_ = nullptr;
}

void ThawGuardian::reap() {
    // A released guardian exits at once; one that acts may take minutes (its settle limit)
    // and is left to finish on its own: the process module reaps it when it ends.
    if (released_ && child_.wait_until(Clock::now() + milliseconds(2000))) return;
    child_.detach();
}

void ThawGuardian::armed(Clock::time_point at) noexcept {
    if (!shared_) return;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
    armed_word(shared_).store(std::max<std::int64_t>(ns, 1), std::memory_order_release);
}

bool ThawGuardian::alive() {
    return child_.running();
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
    // Before "R": no freeze can have returned before this instant.
    const auto started = Clock::now();
    if (::write(STDOUT_FILENO, "R\n", 2) != 2) return 1;

    // The shared armed word (see the header): read only when a deadline may have passed.
    void* shared = nullptr;
    if (spec.armed_fd >= 0) {
        shared = ::mmap(nullptr, kArmedBytes, PROT_READ, MAP_SHARED, spec.armed_fd, 0);
        if (shared == MAP_FAILED) shared = nullptr;
        ::close(spec.armed_fd);
    }
    auto armed_at = [shared]() -> std::optional<Clock::time_point> {
        if (!shared) return std::nullopt;
        std::int64_t ns = armed_word(shared).load(std::memory_order_acquire);
        if (ns == 0) return std::nullopt;
        return Clock::time_point(std::chrono::nanoseconds(ns));
    };
    const auto arm_deadline = started + spec.arm_timeout;
    // No deadline falls earlier than this.
    auto wake = std::min(arm_deadline, started + spec.release_after);
    bool parent_alive = true;
    const char* why = "vmshadow did not report the freeze in time";
    for (;;) {
        if (!wait_readable(STDIN_FILENO, wake)) {
            const auto now = Clock::now();
            if (auto at = armed_at()) {
                wake = *at + spec.release_after;
                if (now < wake) continue;
                why = "the freeze was held past its time limit";
                break;
            }
            if (now >= arm_deadline) break;
            // Not armed yet: a freeze returning from now on has its deadline after this.
            wake = std::min(arm_deadline, now + spec.release_after);
            continue;
        }
        char c = 0;
        ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            why = "vmshadow exited or gave up while the guest was frozen";
            parent_alive = false;
            break;
        }
        if (c == 'T') return 0;
    }
    // vmshadow is gone or gave up, and a thaw may take minutes: let go of the stderr we
    // share with it, so that whoever reads vmshadow's output (a pipe, `$(...)`) is not held
    // open until we finish; the outcome goes to syslog instead.
    const bool detached = !parent_alive;
    if (detached) {
        UniqueFd null_fd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
        if (null_fd) ::dup2(null_fd.get(), STDERR_FILENO);
        ::openlog("vmshadow-thaw-guardian", LOG_PID, LOG_DAEMON);
    }
    auto done = act(*domain, spec, parent_alive);
    std::string line = who + (done ? *done : std::string(action_name(spec.action)) + " failed") +
                       " (" + why + ")" + (done ? "" : ": " + done.error().message());
    if (detached)
        ::syslog(done ? LOG_NOTICE : LOG_ERR, "%s", line.c_str());
    else
        std::cerr << line << std::endl;
    return done ? 0 : 1;
}

}  // namespace vmshadow::virt
