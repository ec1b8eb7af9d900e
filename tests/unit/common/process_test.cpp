// SPDX-License-Identifier: MIT
// Daemons are recorded before they run, or die with vmshadow: a vmshadow killed at any instant
// leaves no daemon that nobody can find (issue 18 item 4).
#include "common/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "unit/common/temp_dir.h"

namespace vmshadow {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test::read_all;
using test::TempDir;

// A daemon that marks that it ran, writes its pidfile and stays.
DaemonOptions marking_daemon(const TempDir& dir) {
    DaemonOptions o;
    o.argv = {"/bin/sh", "-c",
              "touch " + dir.at("ran") + "; echo $$ > " + dir.at("pid") + "; exec sleep 60"};
    o.log = dir.at("log");
    o.pidfile = dir.at("pid");
    o.timeout = 10s;
    return o;
}

bool gone_within(const ProcessId& p, std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(20ms)) {
        ::waitpid(p.pid, nullptr, WNOHANG);
        if (!process_alive(p)) return true;
    }
    return false;
}

ProcessId read_process(const std::string& path) {
    std::ifstream in(path);
    ProcessId p;
    in >> p.pid >> p.start_time;
    return p;
}

// Runs `body` in a child process that then dies by SIGKILL, like a vmshadow killed by a user.
void in_killed_child(const std::function<void()>& body) {
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        body();
        ::kill(::getpid(), SIGKILL);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
}

TEST(StartDaemon, TheProgramRunsOnlyAfterItsRecordIsWritten) {
    TempDir dir;
    DaemonOptions o = marking_daemon(dir);
    bool recorded = false;
    o.record = [&](const ProcessId& id) -> Status {
        recorded = true;
        EXPECT_TRUE(process_alive(id));
        std::this_thread::sleep_for(200ms);
        EXPECT_FALSE(fs::exists(dir.at("ran"))) << "the program ran before its record";
        return {};
    };
    auto daemon = start_daemon(o);
    ASSERT_TRUE(daemon) << daemon.error().message();
    EXPECT_TRUE(recorded);
    EXPECT_TRUE(fs::exists(dir.at("ran")));
    EXPECT_TRUE(stop_process(*daemon, 2s));
}

TEST(StartDaemon, AFailedRecordMeansTheProgramNeverRuns) {
    TempDir dir;
    DaemonOptions o = marking_daemon(dir);
    ProcessId child;
    o.record = [&](const ProcessId& id) -> Status {
        child = id;
        return fail(ErrorKind::io, "disk full");
    };
    auto daemon = start_daemon(o);
    ASSERT_FALSE(daemon);
    EXPECT_EQ(daemon.error().message(), "disk full");
    EXPECT_FALSE(process_alive(child));
    std::this_thread::sleep_for(200ms);
    EXPECT_FALSE(fs::exists(dir.at("ran")));
}

TEST(StartDaemon, AParentKilledBeforeTheRecordLeavesNoDaemon) {
    TempDir dir;
    in_killed_child([&] {
        DaemonOptions o = marking_daemon(dir);
        o.record = [&](const ProcessId& id) -> Status {
            std::ofstream(dir.at("child")) << id.pid << " " << id.start_time << "\n";
            ::kill(::getpid(), SIGKILL);  // killed while it writes the record
            return {};
        };
        (void)start_daemon(o);
    });
    ProcessId child = read_process(dir.at("child"));
    ASSERT_GT(child.pid, 0);
    EXPECT_TRUE(gone_within(child, 5s)) << "the unrecorded child outlived its parent";
    EXPECT_FALSE(fs::exists(dir.at("ran")));
}

TEST(StartDaemon, ADaemonTiedToItsParentDiesWithIt) {
    TempDir dir;
    in_killed_child([&] {
        DaemonOptions o = marking_daemon(dir);
        o.dies_with_parent = true;
        auto daemon = start_daemon(o);
        if (daemon)
            std::ofstream(dir.at("child")) << daemon->pid << " " << daemon->start_time << "\n";
    });
    ProcessId daemon = read_process(dir.at("child"));
    ASSERT_GT(daemon.pid, 0) << read_all(dir.at("log"));
    EXPECT_TRUE(gone_within(daemon, 5s)) << "the daemon outlived its killed parent";
}

// A daemon that forks into the background (nbdkit without -f) stays in the session that
// was recorded before it ran: stop_session finds it without its pid.
TEST(StartDaemon, AForkingDaemonIsFoundByTheSessionRecordedBeforeItRan) {
    TempDir dir;
    DaemonOptions o = marking_daemon(dir);
    o.argv = {"/bin/sh", "-c",
              "touch " + dir.at("ran") + "; /bin/sh -c 'echo $$ > " + dir.at("pid") +
                  "; exec sleep 60' </dev/null >/dev/null 2>&1 & exit 0"};
    o.forks = true;
    ProcessId session;
    o.record = [&](const ProcessId& id) -> Status {
        session = id;
        return {};
    };
    auto daemon = start_daemon(o);
    ASSERT_TRUE(daemon) << daemon.error().message();
    EXPECT_NE(daemon->pid, session.pid);
    EXPECT_TRUE(stop_session(session, 2s));
    EXPECT_TRUE(gone_within(*daemon, 5s));
}

TEST(StartDaemon, ADaemonNeitherRecordedNorTiedIsRefused) {
    TempDir dir;
    auto daemon = start_daemon(marking_daemon(dir));
    ASSERT_FALSE(daemon);
    EXPECT_EQ(daemon.error().kind(), ErrorKind::internal);
    EXPECT_FALSE(fs::exists(dir.at("ran")));
}

TEST(ProcessesWithArgument, FindsADaemonByAnArgumentPrefix) {
    TempDir dir;
    DaemonOptions o = marking_daemon(dir);
    // No exec: the shell keeps its arguments ($0 here) in its cmdline.
    o.argv = {"/bin/sh", "-c", "echo $$ > " + dir.at("pid") + "; while :; do sleep 1; done",
              "overlay=" + dir.at("x.overlay")};
    o.dies_with_parent = true;
    auto daemon = start_daemon(o);
    ASSERT_TRUE(daemon) << daemon.error().message();
    auto found = processes_with_argument("overlay=" + dir.path.string() + "/");
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].pid, daemon->pid);
    EXPECT_TRUE(stop_process(*daemon, 2s));
    EXPECT_TRUE(processes_with_argument("overlay=" + dir.path.string() + "/").empty());
}

}  // namespace
}  // namespace vmshadow
