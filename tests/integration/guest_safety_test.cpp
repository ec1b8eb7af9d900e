// SPDX-License-Identifier: MIT
// Faults during a live backup must never leave the guest frozen or paused (issue 18): a
// freeze hook slower than every vmshadow timeout, a scratch filesystem another process fills
// during the copy, an agent that does not answer. Each ends with the guest thawed and
// running, the repository passing `repo check`, and the README's exit code.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <future>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class GuestSafetyTest : public VmBackupTest {
  protected:
    // The guest's end state every test asserts: thawed, running, its workload committing,
    // the repository sound.
    void expect_guest_healthy(lab::LabGuest& g, std::chrono::seconds thaw_limit) {
        auto state = g.domain().state();
        ASSERT_TRUE(state) << state.error().message();
        ASSERT_EQ(*state, virt::DomainState::running) << "the VM was left paused or stopped";
        std::string status;
        for (auto end = Clock::now() + thaw_limit; Clock::now() < end;) {
            status = freeze_status(g);
            if (status == "thawed") break;
            std::this_thread::sleep_for(1s);
        }
        EXPECT_EQ(status, "thawed");
        auto before = g.last_committed_row();
        ASSERT_TRUE(before) << before.error().message();
        bool moved = false;
        for (int i = 0; i < 30 && !moved; ++i) {
            std::this_thread::sleep_for(1s);
            auto now = g.last_committed_row();
            moved = now && *now > *before;
        }
        EXPECT_TRUE(moved) << "the workload no longer commits";
        auto check = run({"repo", "check"});
        EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    }
};

lab::GuestOptions with_workload() {
    lab::GuestOptions o;
    o.workload = true;
    return o;
}

TEST_F(GuestSafetyTest, FreezeHookSlowerThanTheFreezeTimeoutLeavesTheGuestThawed) {
    lab::LabGuest& g = boot(with_workload());
    // The hook sleeps 25 s, then pauses the workload and lets the agent freeze: long after
    // vmshadow gave up on the freeze (8 s).
    ASSERT_TRUE(g.exec("echo 25 > /run/lab/freeze-delay"));
    const auto started = Clock::now();
    auto out = backup({g.name(), "--method", "application", "--freeze-timeout", "8"});
    EXPECT_LT(Clock::now() - started, 25s) << "the backup waited for the hook";
    EXPECT_EQ(out.exit_code, 5) << out.out << out.err;  // timeout
    EXPECT_NE(out.out.find("did not return within 8 s"), std::string::npos) << out.out;
    EXPECT_NE(out.out.find("freeze hook may be slow"), std::string::npos) << out.out;
    EXPECT_EQ(out.out.find("is qemu-guest-agent installed"), std::string::npos) << out.out;

    // The freeze lands at ~25 s; the guardian must thaw it. The hook's thaw side logs
    // "thaw: writer released" once the agent thawed after that late freeze.
    bool late_freeze_thawed = false;
    for (auto end = Clock::now() + 120s; Clock::now() < end && !late_freeze_thawed;) {
        std::this_thread::sleep_for(2s);
        auto log = g.read_file("/var/log/fsfreeze-hook.log");
        late_freeze_thawed = log && log->find("writer paused") != std::string::npos &&
                             log->find("thaw: writer released") != std::string::npos;
    }
    EXPECT_TRUE(late_freeze_thawed) << "the late freeze was not thawed";
    ASSERT_TRUE(g.exec("rm -f /run/lab/freeze-delay"));
    expect_guest_healthy(g, 30s);
    EXPECT_TRUE(scratch_leftovers().empty());
}

TEST_F(GuestSafetyTest, FreezeHookVetoReadsAsTheHooksVeto) {
    lab::LabGuest& g = boot(with_workload());
    // The workload stopped: the hook's pause request times out and it vetoes the freeze.
    ASSERT_TRUE(g.exec("kill -STOP $(cat /run/lab/workload.pid)"));
    auto out = backup({g.name(), "--method", "application"});
    ASSERT_TRUE(g.exec("kill -CONT $(cat /run/lab/workload.pid)"));
    EXPECT_EQ(out.exit_code, 12) << out.out << out.err;  // cancelled: vetoed
    EXPECT_NE(out.out.find("freeze hook vetoed the freeze"), std::string::npos) << out.out;
    EXPECT_EQ(out.out.find("is qemu-guest-agent installed"), std::string::npos) << out.out;
    expect_guest_healthy(g, 30s);
}

TEST_F(GuestSafetyTest, AgentThatDoesNotAnswerWithApplicationMethodIsUnavailable) {
    // Stopped (SIGSTOP: connected, silent) and killed (channel disconnected).
    for (auto mode : {lab::AgentMode::hang, lab::AgentMode::on}) {
        lab::GuestOptions o;
        o.agent = mode;
        lab::LabGuest& g = boot(o, mode == lab::AgentMode::hang ? "-hang" : "-killed");
        if (mode == lab::AgentMode::on) {
            ASSERT_TRUE(g.exec("(sleep 1; killall -9 qemu-ga) </dev/null >/dev/null 2>&1 &"));
            std::this_thread::sleep_for(5s);
        }
        auto out = backup({g.name(), "--method", "application"});
        EXPECT_EQ(out.exit_code, 4) << out.out << out.err;  // unavailable
        auto state = g.domain().state();
        ASSERT_TRUE(state);
        EXPECT_EQ(*state, virt::DomainState::running);
        EXPECT_TRUE(scratch_leftovers().empty());
    }
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

// A tmpfs mounted on the test's scratch directory, before the guest starts (QEMU runs in its
// own mount namespace: a later mount would be invisible to it). Unmounted even on failure.
struct SmallScratch {
    std::filesystem::path dir;
    bool mounted = false;
    SmallScratch(std::filesystem::path d, const std::string& size) : dir(std::move(d)) {
        mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    }
    ~SmallScratch() {
        if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
    }
};

TEST_F(GuestSafetyTest, ScratchFilledByAnotherProcessNeverEndsAsPlainSuccess) {
    SmallScratch small(scratch, "300M");
    ASSERT_TRUE(small.mounted) << "mount tmpfs on " << scratch;
    lab::LabGuest& g = boot(with_workload());
    // Data the guest keeps overwriting in place: each first overwrite during the backup is a
    // copy-before-write into the scratch filesystem. A 4 s freeze hook holds the backup
    // between making its scratch file and starting its job, so the filesystem is full when
    // the guest's writes resume at the thaw.
    ASSERT_TRUE(g.exec("dd if=/dev/urandom of=/var/lib/lab/blob bs=64k count=128; sync", 60s));
    ASSERT_TRUE(
        g.exec("(while :; do dd if=/dev/zero of=/var/lib/lab/blob bs=64k count=128 "
               "conv=notrunc; sync; done) </dev/null >/dev/null 2>&1 &"));
    ASSERT_TRUE(g.exec("echo 4 > /run/lab/freeze-delay"));

    auto backup_run = std::async(std::launch::async, [&] {
        return backup({g.name(), "--method", "application", "--max-scratch", "1G"});
    });
    // Another process fills the scratch filesystem once the backup made its scratch file,
    // for a few seconds.
    const std::filesystem::path filler = scratch / "filler";
    bool filled = false;
    for (auto end = Clock::now() + 60s; Clock::now() < end && !filled;) {
        for (const auto& e : std::filesystem::directory_iterator(scratch))
            filled = filled || e.path().filename().string().starts_with("vmshadow-scratch-");
        if (!filled) std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(filled) << "no scratch file appeared";
    {
        struct statvfs v {};
        ASSERT_EQ(::statvfs(scratch.c_str(), &v), 0);
        int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY, 0600);
        ASSERT_GE(fd, 0);
        (void)::posix_fallocate(fd, 0, static_cast<off_t>(v.f_bavail * v.f_frsize));
        ::close(fd);
    }
    std::this_thread::sleep_for(8s);
    std::filesystem::remove(filler);
    auto out = backup_run.get();
    (void)g.exec("rm -f /run/lab/freeze-delay");

    std::cout << "backup: exit " << out.exit_code << ": " << out.out << std::endl;
    // Whatever happened, never a plain success after a pause: a failure, or a point with a
    // warning. On a loaded machine the guest may write nothing new while the scratch is full;
    // then no pause happened, which `domblkerror` and a running guest prove.
    if (out.exit_code == 0 && out.out.find("warning: QEMU paused the VM") == std::string::npos) {
        auto errors = lab::run_checked({"virsh", "-c", lab::lab_uri(), "domblkerror", g.name()});
        ASSERT_TRUE(errors) << errors.error().message();
        EXPECT_NE(errors->find("No errors found"), std::string::npos) << *errors;
        std::cout << "the guest wrote nothing into the full scratch filesystem in time: no pause "
                     "to detect on this run"
                  << std::endl;
    } else if (out.exit_code != 0) {
        EXPECT_EQ(out.exit_code, 9) << out.out << out.err;  // I/O error or disk full
        EXPECT_NE(out.out.find("paused the VM on a write error"), std::string::npos) << out.out;
    }
    EXPECT_TRUE(scratch_leftovers().empty());
    expect_guest_healthy(g, 30s);
}

TEST_F(GuestSafetyTest, ScratchDirMountedAfterTheVmStartedIsAConfigurationError) {
    lab::LabGuest& g = boot({});
    SmallScratch late(scratch, "300M");  // QEMU's mount namespace never sees this mount
    ASSERT_TRUE(late.mounted) << "mount tmpfs on " << scratch;
    auto out = backup({g.name(), "--method", "crash"});
    EXPECT_EQ(out.exit_code, 2) << out.out << out.err;  // the user's configuration
    EXPECT_NE(out.out.find("own mount namespace"), std::string::npos) << out.out;
    auto state = g.domain().state();
    ASSERT_TRUE(state);
    EXPECT_EQ(*state, virt::DomainState::running);
    EXPECT_TRUE(scratch_leftovers().empty());
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

}  // namespace
}  // namespace vmshadow::testing
