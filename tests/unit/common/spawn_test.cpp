// SPDX-License-Identifier: MIT
// The one process module (issue 19 item 4): every child has a deadline or is owned and
// reaped, a child tied to vmshadow dies with the process (not with the thread that started
// it), a child gets exactly the descriptors it is given, and a zombie counts as gone.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include "common/process.h"
#include "unit/common/temp_dir.h"

namespace vmshadow {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

using test::read_all;
using test::TempDir;

// Neither running nor a zombie: /proc has no such process.
bool no_such_process(pid_t pid) {
    return !fs::exists("/proc/" + std::to_string(pid));
}

bool becomes(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
    for (auto end = SteadyClock::now() + limit; SteadyClock::now() < end;
         std::this_thread::sleep_for(10ms))
        if (condition()) return true;
    return condition();
}

// Our child that exited and that nobody reaped.
struct Zombie {
    pid_t pid = ::fork();
    Zombie() {
        if (pid == 0) _exit(0);
    }
    ~Zombie() { ::waitpid(pid, nullptr, 0); }
};

TEST(Spawn, AChildTiedToVmshadowOutlivesTheThreadThatStartedIt) {
    TempDir dir;
    pid_t tester = ::fork();
    ASSERT_GE(tester, 0);
    if (tester == 0) {  // a vmshadow: starts qemu-nbd-like child on a worker, then is killed
        ProcessId started;
        std::thread([&] {
            auto child = spawn({.argv = {"sleep", "60"}, .dies_with_vmshadow = true});
            if (!child) _exit(1);
            started = child->id();
            child->detach();
        }).join();
        std::this_thread::sleep_for(300ms);
        std::ofstream(dir.at("child"))
            << started.pid << " " << started.start_time << " " << started.alive() << "\n";
        ::kill(::getpid(), SIGKILL);
    }
    ASSERT_EQ(::waitpid(tester, nullptr, 0), tester);
    std::istringstream in(read_all(dir.at("child")));
    ProcessId child;
    bool alive_after_thread = false;
    in >> child.pid >> child.start_time >> alive_after_thread;
    ASSERT_GT(child.pid, 0);
    EXPECT_TRUE(alive_after_thread) << "the child died with the thread that started it";
    EXPECT_TRUE(becomes([&] { return !child.alive(); }, 5s)) << "it outlived vmshadow";
}

TEST(Spawn, AChildGetsTheDescriptorsItIsGivenAndNoOther) {
    TempDir dir;
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    int leaked = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC: would be inherited
    ASSERT_GE(leaked, 0);
    auto child = spawn({.argv = {"/bin/sh", "-c",
                                 "echo given >&5; ls /proc/self/fd > " + dir.at("fds") +
                                     "; echo out; echo err >&2"},
                        .output = dir.at("log"),
                        .fds = {{pipe_fds[1], 5}}});
    ::close(pipe_fds[1]);
    ::close(leaked);
    ASSERT_TRUE(child) << child.error().message();
    EXPECT_EQ(child->wait_until(SteadyClock::now() + 10s), 0);
    char buf[16] = {};
    EXPECT_EQ(::read(pipe_fds[0], buf, sizeof buf - 1), 6);
    EXPECT_STREQ(buf, "given\n");
    ::close(pipe_fds[0]);
    std::istringstream fds(read_all(dir.at("fds")));
    std::set<int> seen;
    for (int fd; fds >> fd;) seen.insert(fd);
    // 0-2, 5, and the one `ls` opened to read /proc/self/fd.
    EXPECT_TRUE(seen.contains(5));
    EXPECT_LE(seen.size(), 5u) << read_all(dir.at("fds"));
    if (leaked != 5 && leaked != 3) {
        EXPECT_FALSE(seen.contains(leaked)) << "inherited";
    }
    EXPECT_EQ(read_all(dir.at("log")), "out\nerr\n");
}

TEST(Spawn, ADescriptorKeepsItsNumberWhenGivenAsItself) {
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);  // close-on-exec: must still reach the child
    auto child = spawn({.argv = {"/bin/sh", "-c", "echo same >&" + std::to_string(pipe_fds[1])},
                        .fds = {{pipe_fds[1], pipe_fds[1]}}});
    ::close(pipe_fds[1]);
    ASSERT_TRUE(child);
    EXPECT_EQ(child->wait_until(SteadyClock::now() + 10s), 0);
    char buf[16] = {};
    EXPECT_EQ(::read(pipe_fds[0], buf, sizeof buf - 1), 5);
    ::close(pipe_fds[0]);
}

TEST(Spawn, ANewSessionChildLeadsItsSession) {
    auto child = spawn({.argv = {"sleep", "60"}, .new_session = true});
    ASSERT_TRUE(child);
    EXPECT_TRUE(becomes([&] { return ::getsid(child->id().pid) == child->id().pid; }, 5s));
    EXPECT_EQ(child->stop(1s), 128 + SIGTERM);
}

TEST(Spawn, AMissingProgramExits127SayingWhy) {
    TempDir dir;
    auto child = spawn({.argv = {"vmshadow-no-such-program"}, .output = dir.at("log")});
    ASSERT_TRUE(child);
    EXPECT_EQ(child->wait_until(SteadyClock::now() + 10s), 127);
    EXPECT_NE(read_all(dir.at("log")).find("cannot run vmshadow-no-such-program"),
              std::string::npos);
}

TEST(Child, DestroyingItStopsAndReapsTheProcess) {
    pid_t pid = -1;
    {
        auto child = spawn({.argv = {"sleep", "60"}});
        ASSERT_TRUE(child);
        pid = child->id().pid;
        EXPECT_TRUE(child->running());
    }
    EXPECT_TRUE(no_such_process(pid)) << "left a process or a zombie";
}

TEST(Child, StopKillsAChildThatIgnoresSigterm) {
    TempDir dir;
    auto child = spawn(
        {.argv = {"/bin/sh", "-c", "trap '' TERM; touch " + dir.at("ready") + "; sleep 60 & wait"},
         .new_session = true});
    ASSERT_TRUE(child);
    ASSERT_TRUE(becomes([&] { return fs::exists(dir.at("ready")); }, 5s));
    auto started = SteadyClock::now();
    EXPECT_EQ(child->stop(200ms), 128 + SIGKILL);
    EXPECT_LT(SteadyClock::now() - started, 3s);
    EXPECT_TRUE(no_such_process(child->id().pid));
    ::kill(-child->id().pid, SIGKILL);  // the shell's sleep, in the child's session
}

TEST(Child, ADetachedChildIsReapedWhenItExits) {
    auto child = spawn({.argv = {"sleep", "0.2"}});
    ASSERT_TRUE(child);
    pid_t pid = child->id().pid;
    child->detach();
    EXPECT_TRUE(becomes([&] { return no_such_process(pid); }, 5s)) << "left a zombie";
}

TEST(RunTool, TheDeadlineKillsTheWholeGroupAndLeavesNoZombie) {
    TempDir dir;
    auto started = SteadyClock::now();
    auto r = run_tool({"/bin/sh", "-c", "sleep 60 & echo $! > " + dir.at("bg") + "; wait"}, 300ms);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::timeout);
    EXPECT_NE(r.error().message().find("did not finish within"), std::string::npos);
    EXPECT_LT(SteadyClock::now() - started, 5s);
    pid_t background = static_cast<pid_t>(std::atol(read_all(dir.at("bg")).c_str()));
    ASSERT_GT(background, 0);
    EXPECT_TRUE(becomes([&] { return !process_running(background); }, 5s))
        << "the command's background process survived its deadline";
}

TEST(RunChecked, AFailureNamesTheCommandAndItsLastLine) {
    auto r = run_checked({"/bin/sh", "-c", "echo first >&2; echo last words >&2; exit 3"});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::io);
    EXPECT_NE(r.error().message().find("failed (exit 3): last words"), std::string::npos);
    EXPECT_EQ(run_checked({"vmshadow-no-such-program"}).error().kind(), ErrorKind::unavailable);
}

TEST(ProcessIdentity, ThisProcessIsAliveUnderItsOwnStartTime) {
    ProcessId self = ProcessId::self();
    EXPECT_FALSE(self.start_time.empty());
    EXPECT_TRUE(self.alive());
    EXPECT_TRUE(process_running(self.pid));
    EXPECT_FALSE((ProcessId{self.pid, self.start_time + "1"}.alive())) << "a reused pid";
    EXPECT_FALSE((ProcessId{self.pid, ""}.alive())) << "no start time proves nothing";
}

TEST(ProcessIdentity, AZombieCountsAsGone) {
    Zombie zombie;
    ASSERT_GT(zombie.pid, 0);
    siginfo_t info{};
    ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(zombie.pid), &info, WEXITED | WNOWAIT), 0);
    EXPECT_TRUE(fs::exists("/proc/" + std::to_string(zombie.pid))) << "it is a zombie now";
    EXPECT_EQ(process_start_time(zombie.pid), "");
    EXPECT_FALSE(process_running(zombie.pid));
    EXPECT_FALSE(ProcessId::of(zombie.pid).alive());
}

TEST(ProcessIdentity, NoProcessIsNotRunning) {
    EXPECT_FALSE(process_running(-1));
    EXPECT_FALSE(process_running(0));
    EXPECT_FALSE(ProcessId::of(999999999).alive());
}

}  // namespace
}  // namespace vmshadow
