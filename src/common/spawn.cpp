// SPDX-License-Identifier: MIT
// spawn and Child (common/process.h), and the keeper thread every fork is made on.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

#include "common/process.h"
#include "common/process_detail.h"
#include "common/unique_fd.h"

namespace vmshadow {
namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// One thread for the life of the process. PR_SET_PDEATHSIG fires when the THREAD that forked
// the child ends, not the process: a child forked by a worker thread would be killed when
// that worker finishes its job. So every fork is made here. The keeper also reaps detached
// children (a long-running vmshadow must not collect zombies; this host's init reaps none).
class Keeper {
  public:
    // The keeper of this process. A process forked from vmshadow (a test's child) has no
    // keeper thread although it inherited the object: it gets its own.
    static Keeper& get() {
        static std::mutex mutex;
        static Keeper* keeper = nullptr;
        static pid_t owner = 0;
        std::lock_guard lock(mutex);
        if (!keeper || owner != ::getpid()) {
            // Never destroyed: the thread runs until the process ends, and a static
            // destructor would pull the object from under it.
            keeper = std::make_unique<Keeper>().release();
            owner = ::getpid();
        }
        return *keeper;
    }

    Keeper() {
        // No signal for this thread: process-directed signals (SIGINT, SIGTERM) go to threads
        // that wait for them.
        sigset_t all, old;
        sigfillset(&all);
        ::pthread_sigmask(SIG_SETMASK, &all, &old);
        std::thread([this] { loop(); }).detach();
        ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }

    pid_t fork_here(const std::function<pid_t()>& fork_fn) {
        std::packaged_task<pid_t()> job(fork_fn);
        auto done = job.get_future();
        {
            std::lock_guard lock(mutex_);
            jobs_.push_back(std::move(job));
        }
        wake_.notify_one();
        return done.get();
    }

    void adopt(pid_t pid) {
        {
            std::lock_guard lock(mutex_);
            orphans_.push_back(pid);
        }
        wake_.notify_one();
    }

  private:
    void loop() {
        for (;;) {
            std::unique_lock lock(mutex_);
            auto have_job = [this] { return !jobs_.empty(); };
            if (orphans_.empty())
                wake_.wait(lock, [this] { return !jobs_.empty() || !orphans_.empty(); });
            else
                wake_.wait_for(lock, milliseconds(100), have_job);
            auto jobs = std::move(jobs_);
            jobs_.clear();
            std::erase_if(orphans_, [](pid_t pid) {
                pid_t r = ::waitpid(pid, nullptr, WNOHANG);
                return r == pid || (r < 0 && errno == ECHILD);
            });
            lock.unlock();
            for (auto& job : jobs) job();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::packaged_task<pid_t()>> jobs_;
    std::vector<pid_t> orphans_;
};

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
    std::vector<std::string> env;
    for (char** e = environ; e && *e; ++e) {
        std::string kv(*e);
        bool replaced = false;
        for (const auto& x : extra)
            if (x.substr(0, x.find('=') + 1) == kv.substr(0, kv.find('=') + 1)) replaced = true;
        if (!replaced) env.push_back(std::move(kv));
    }
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

// Everything the child needs, prepared before the fork: after it only async-signal-safe
// calls are allowed (vmshadow has threads).
struct ChildPlan {
    std::vector<char*> argv, envp;
    std::vector<InheritedFd> fds;  // complete: 0, 1 and 2 included
    std::vector<int> moved;        // room for the fds' temporary copies
    int hold_read = -1, hold_write = -1;
    bool new_session = false, dies_with_vmshadow = false;
    pid_t parent = -1;
};

// Gives the child exactly plan.fds: each is first copied above every target (so that one
// target never overwrites another's source), then put in place; all else closes at exec.
void place_fds(ChildPlan& plan) {
    int top = 2;
    for (const auto& f : plan.fds) top = std::max({top, f.as, f.fd});
    for (std::size_t i = 0; i < plan.fds.size(); ++i) {
        plan.moved[i] = ::fcntl(plan.fds[i].fd, F_DUPFD_CLOEXEC, top + 1);
        if (plan.moved[i] < 0) _exit(126);
    }
    for (std::size_t i = 0; i < plan.fds.size(); ++i)
        if (::dup2(plan.moved[i], plan.fds[i].as) < 0) _exit(126);
    ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
    for (const auto& f : plan.fds)
        if (f.as > 2) ::fcntl(f.as, F_SETFD, 0);
}

[[noreturn]] void exec_child(ChildPlan& plan) {
    if (plan.new_session) ::setsid();
    if (plan.dies_with_vmshadow) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != plan.parent) _exit(126);  // vmshadow died before the signal was set
    }
    if (plan.hold_read >= 0) {
        ::close(plan.hold_write);
        char go = 0;
        ssize_t n;
        do {
            n = ::read(plan.hold_read, &go, 1);
        } while (n < 0 && errno == EINTR);
        if (n != 1) _exit(126);  // vmshadow died (or gave up) before it recorded us
    }
    place_fds(plan);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    ::execvpe(plan.argv[0], plan.argv.data(), plan.envp.data());
    const char* why = std::strerror(errno);
    for (const char* part :
         {"cannot run ", static_cast<const char*>(plan.argv[0]), ": ", why, "\n"})
        (void)!::write(2, part, std::strlen(part));
    _exit(127);
}

int exit_code_of(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

}  // namespace

namespace process_detail {

Result<ProcessId> fork_child(const SpawnOptions& o, int hold_read, int hold_write) {
    if (o.argv.empty()) return fail(ErrorKind::invalid_argument, "empty command");
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null) return fail(ErrorKind::io, std::string("cannot open /dev/null: ") + strerror(errno));
    UniqueFd out(o.output.empty()
                     ? ::fcntl(null.get(), F_DUPFD_CLOEXEC, 0)
                     : ::open(o.output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!out) return fail(ErrorKind::io, "cannot create " + o.output + ": " + strerror(errno));
    std::vector<std::string> args = o.argv, env = environment_with(o.env);
    ChildPlan plan{c_strings(args), c_strings(env),       {},        {}, hold_read, hold_write,
                   o.new_session,   o.dies_with_vmshadow, ::getpid()};
    for (InheritedFd standard :
         {InheritedFd{null.get(), 0}, InheritedFd{out.get(), 1}, InheritedFd{out.get(), 2}}) {
        bool given = std::ranges::any_of(o.fds, [&](auto f) { return f.as == standard.as; });
        if (!given) plan.fds.push_back(standard);
    }
    plan.fds.insert(plan.fds.end(), o.fds.begin(), o.fds.end());
    plan.moved.resize(plan.fds.size());
    pid_t pid = Keeper::get().fork_here([&plan] {
        pid_t child = ::fork();
        if (child == 0) exec_child(plan);
        return child;
    });
    if (pid < 0) return fail(ErrorKind::unavailable, "cannot start " + o.argv[0] + ": fork failed");
    // Our child, not reaped: its pid can't name another process, whatever its state.
    return ProcessId{pid, stat_field(pid, 22)};
}

bool reap_within(pid_t pid, milliseconds limit) {
    auto deadline = SteadyClock::now() + limit;
    for (;;) {
        pid_t r = ::waitpid(pid, nullptr, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        if (SteadyClock::now() >= deadline) return false;
        std::this_thread::sleep_for(milliseconds(5));
    }
}

void reap_later(pid_t pid) {
    Keeper::get().adopt(pid);
}

}  // namespace process_detail

Result<Child> spawn(const SpawnOptions& options) {
    auto id = process_detail::fork_child(options);
    if (!id) return std::unexpected(id.error());
    return Child(std::move(*id));
}

Child::Child(Child&& other) noexcept
    : id_(std::exchange(other.id_, ProcessId{})),
      exit_code_(other.exit_code_),
      owned_(std::exchange(other.owned_, false)) {}

Child& Child::operator=(Child&& other) noexcept {
    if (this != &other) {
        if (owned_) (void)stop(kStopGrace);
        id_ = std::exchange(other.id_, ProcessId{});
        exit_code_ = other.exit_code_;
        owned_ = std::exchange(other.owned_, false);
    }
    return *this;
}

Child::~Child() {
    if (owned_) (void)stop(kStopGrace);
}

bool Child::running() const {
    if (!owned_) return !exit_code_ && id_.alive();  // detached: the keeper reaps it
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(id_.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        return false;  // ECHILD: reaped by someone else
    return info.si_pid == 0;
}

std::optional<int> Child::wait_until(SteadyClock::time_point deadline) {
    while (owned_) {
        int status = 0;
        pid_t r = ::waitpid(id_.pid, &status, WNOHANG);
        if (r == id_.pid || (r < 0 && errno != EINTR)) {
            exit_code_ = r == id_.pid ? exit_code_of(status) : -1;  // -1: reaped elsewhere
            owned_ = false;
            break;
        }
        if (SteadyClock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(milliseconds(5));
    }
    return exit_code_;
}

std::optional<int> Child::stop(milliseconds grace) {
    if (!owned_) return exit_code_;
    if (auto code = wait_until(SteadyClock::now())) return code;
    ::kill(id_.pid, SIGTERM);
    if (auto code = wait_until(SteadyClock::now() + grace)) return code;
    ::kill(id_.pid, SIGKILL);
    if (auto code = wait_until(SteadyClock::now() + std::chrono::seconds(5))) return code;
    detach();  // stuck in the kernel (uninterruptible I/O): reaped when it gets out
    return std::nullopt;
}

void Child::detach() {
    if (owned_) process_detail::reap_later(id_.pid);
    owned_ = false;
}

}  // namespace vmshadow
