// SPDX-License-Identifier: MIT
// Shadow copies on real guests (issue 16, docs/SHADOW-COPIES.md): a copy through a shadow
// equals the disk at the shadow's instant while the guest writes, it resumes after kill -9
// on the same shadow, a shadow whose diff area fills is dropped without the guest seeing a
// write error, a shadow whose watcher died is cleaned by the next command, and a backup or a
// checkpoint create, delete or apply of a VM with a shadow is refused naming it.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <fstream>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ShadowTest : public VmBackupTest {
  protected:
    void SetUp() override {
        VmBackupTest::SetUp();
        shadow_dir = dir / "shadows";
        ::setenv("VMSHADOW_SHADOW_DIR", shadow_dir.c_str(), 1);
        // Checkpoint records in the test's folder too (the vmshadow processes inherit it).
        ::setenv("VMSHADOW_CHECKPOINT_DIR", (dir / "checkpoints").c_str(), 1);
    }
    void TearDown() override {
        (void)run({"shadow", "delete", "--all"});
        ::unsetenv("VMSHADOW_SHADOW_DIR");
        ::unsetenv("VMSHADOW_CHECKPOINT_DIR");
        ::unsetenv("VMSHADOW_TEST_PAUSE_AT");
        ::unsetenv("VMSHADOW_TEST_PAUSE_MS");
        VmBackupTest::TearDown();
    }

    lab::LabGuest& boot_with_data_disk() {
        lab::GuestOptions o;
        o.workload = true;
        o.data_disks = {{lab::DataDisk::Kind::ext4, "256M"}};
        return boot(o);
    }

    // The guest fills /data/vdb/w with fresh data, 4 MiB at a time, until it is stopped.
    static void start_writer(lab::LabGuest& g) {
        ASSERT_TRUE(
            g.exec("(while [ ! -e /run/stop-writer ]; do dd if=/dev/urandom "
                   "of=/data/vdb/w bs=1M count=4 conv=fsync; done) </dev/null "
                   ">/dev/null 2>&1 &"));
    }
    static void stop_writer(lab::LabGuest& g) { (void)g.exec("touch /run/stop-writer"); }

    json shadows() {
        auto out = run({"shadow", "list", "--json"});
        EXPECT_EQ(out.exit_code, 0) << out.err;
        auto j = json::parse(out.out, nullptr, false);
        return j.is_discarded() ? json::array() : j;
    }

    // SHA-256 of everything an NBD URI serves (nbdcopy to a pipe).
    static std::string nbd_sha256(const std::string& uri) {
        auto r = lab::run_process(
            {"bash", "-c", "set -o pipefail; nbdcopy '" + uri + "' - | sha256sum"});
        if (!r || r->exit_code != 0) return "nbdcopy failed";
        return r->out.substr(0, 64);
    }
    static std::string file_sha256(const fs::path& file) {
        auto r = lab::run_process({"sha256sum", file.string()});
        return r && r->exit_code == 0 ? r->out.substr(0, 64) : "sha256sum failed";
    }
    std::string qcow2_sha256(const fs::path& image) {
        fs::path raw = dir / "converted.raw";
        auto r =
            lab::run_process({"qemu-img", "convert", "-O", "raw", image.string(), raw.string()});
        if (!r || r->exit_code != 0) return "qemu-img failed";
        std::string sum = file_sha256(raw);
        std::error_code ec;
        fs::remove(raw, ec);
        return sum;
    }

    // Waits until `file` holds `count` lines "paused at shadow-copy-stretch".
    static bool wait_for_pauses(const fs::path& file, int count, std::chrono::seconds limit) {
        for (auto end = Clock::now() + limit; Clock::now() < end;) {
            std::ifstream in(file);
            std::string line;
            int seen = 0;
            while (std::getline(in, line))
                if (line.find("paused at shadow-copy-stretch") != std::string::npos) ++seen;
            if (seen >= count) return true;
            std::this_thread::sleep_for(100ms);
        }
        return false;
    }

    // The guest kept running without a write error.
    static void expect_no_guest_io_error(lab::LabGuest& g) {
        auto state = g.domain().state();
        ASSERT_TRUE(state) << state.error().message();
        EXPECT_EQ(*state, virt::DomainState::running) << "the VM was paused";
        auto dmesg = g.exec("dmesg");
        ASSERT_TRUE(dmesg) << dmesg.error().message();
        EXPECT_EQ(dmesg->find("I/O error"), std::string::npos) << *dmesg;
        EXPECT_EQ(dmesg->find("EXT4-fs error"), std::string::npos) << *dmesg;
    }

    fs::path shadow_dir;
};

TEST_F(ShadowTest, CopyOfADiskUnderWritesEqualsTheDiskAtTheShadowsInstant) {
    lab::LabGuest& g = boot_with_data_disk();
    start_writer(g);
    fs::path dest = dir / "vdb.raw";
    fs::path log = dir / "copy.log";
    // Each flushed stretch pauses 6 s: time to hash the shadow while the copy runs (the last
    // pause comes before the verification, which ends with the shadow's deletion).
    ::setenv("VMSHADOW_TEST_PAUSE_AT", "shadow-copy-stretch", 1);
    ::setenv("VMSHADOW_TEST_PAUSE_MS", "6000", 1);
    pid_t pid =
        start_vmshadow_in_own_group({"--scratch-dir", scratch.string(), "shadow", "copy", g.name(),
                                     "--disk", "vdb", dest.string(), "--format", "raw", "--json"},
                                    log.string());
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(wait_for_pauses(log, 1, 180s)) << "the copy never reached its first stretch";
    json list = shadows();
    ASSERT_EQ(list.size(), 1u) << list.dump();
    EXPECT_EQ(list[0]["consistency"], "application") << list.dump();
    std::string at_instant = nbd_sha256(list[0]["disks"][0]["nbd_uri"]);
    int status = 0;
    for (auto end = Clock::now() + 300s; Clock::now() < end;) {
        if (::waitpid(pid, &status, WNOHANG) == pid) break;
        std::this_thread::sleep_for(200ms);
    }
    stop_writer(g);
    ASSERT_TRUE(WIFEXITED(status)) << "the copy did not end";
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_EQ(WEXITSTATUS(status), 0) << text;
    EXPECT_EQ(file_sha256(dest), at_instant);
    EXPECT_NE(text.find(at_instant), std::string::npos) << text;  // the reported, verified hash
    EXPECT_TRUE(shadows().empty()) << "the copy's shadow was not deleted";
    EXPECT_FALSE(fs::exists(dest.string() + ".vmshadow-copy"));
    expect_no_guest_io_error(g);
}

TEST_F(ShadowTest, CopyResumesAfterKill9OnTheSameShadow) {
    lab::LabGuest& g = boot_with_data_disk();
    ASSERT_TRUE(g.exec("dd if=/dev/urandom of=/data/vdb/seed bs=1M count=120 conv=fsync"));
    fs::path dest = dir / "vdb.qcow2";
    fs::path log = dir / "copy.log";
    ::setenv("VMSHADOW_TEST_PAUSE_AT", "shadow-copy-stretch", 1);
    ::setenv("VMSHADOW_TEST_PAUSE_MS", "1500", 1);
    pid_t pid = start_vmshadow_in_own_group({"--scratch-dir", scratch.string(), "shadow", "copy",
                                             g.name(), "--disk", "vdb", dest.string()},
                                            log.string());
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(wait_for_pauses(log, 2, 180s)) << "the copy never reached its second stretch";
    json list = shadows();
    ASSERT_EQ(list.size(), 1u);
    std::string id = list[0]["id"];
    std::string at_instant = nbd_sha256(list[0]["disks"][0]["nbd_uri"]);
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::unsetenv("VMSHADOW_TEST_PAUSE_AT");

    // The guest goes on writing; the shadow keeps the instant the copy started from.
    ASSERT_TRUE(g.exec("dd if=/dev/urandom of=/data/vdb/seed bs=1M count=40 conv=fsync,notrunc"));
    std::ifstream progress(dest.string() + ".vmshadow-copy");
    json p = json::parse(progress, nullptr, false);
    ASSERT_FALSE(p.is_discarded());
    EXPECT_EQ(p["shadow"], id);
    EXPECT_GT(p["done"].get<std::uint64_t>(), 0u);

    auto resumed =
        run({"shadow", "copy", g.name(), "--disk", "vdb", dest.string(), "--resume", "--json"});
    ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
    json report = json::parse(resumed.out);
    EXPECT_EQ(report["shadow"], id);
    EXPECT_GT(report["resumed_at"].get<std::uint64_t>(), 0u);
    EXPECT_EQ(report["sha256"], at_instant);
    EXPECT_EQ(qcow2_sha256(dest), at_instant);
    EXPECT_TRUE(shadows().empty());

    // Resuming with the shadow gone is refused: the copy would mix two instants.
    fs::path dest2 = dir / "again.raw";
    ::setenv("VMSHADOW_TEST_PAUSE_AT", "shadow-copy-stretch", 1);
    pid =
        start_vmshadow_in_own_group({"--scratch-dir", scratch.string(), "shadow", "copy", g.name(),
                                     "--disk", "vdb", dest2.string(), "--format", "raw"},
                                    (dir / "copy2.log").string());
    ASSERT_TRUE(wait_for_pauses(dir / "copy2.log", 1, 180s));
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::unsetenv("VMSHADOW_TEST_PAUSE_AT");
    ASSERT_EQ(run({"shadow", "delete", "--all"}).exit_code, 0);
    auto refused = run({"shadow", "copy", g.name(), "--disk", "vdb", dest2.string(), "--format",
                        "raw", "--resume"});
    EXPECT_EQ(refused.exit_code, 6) << refused.out << refused.err;  // conflict
    EXPECT_NE(refused.err.find("is gone"), std::string::npos) << refused.err;
}

TEST_F(ShadowTest, ShadowWhoseDiffAreaFillsIsDroppedWhileTheGuestKeepsWriting) {
    lab::LabGuest& g = boot_with_data_disk();
    auto created =
        run({"shadow", "create", g.name(), "--disk", "vdb", "--max-size", "32M", "--json"});
    ASSERT_EQ(created.exit_code, 0) << created.out << created.err;
    std::string id = json::parse(created.out)["id"];
    // 150 MiB of new data: far past the maximum. Exit status 0 = no write error.
    auto wrote = g.exec("dd if=/dev/urandom of=/data/vdb/big bs=1M count=150 conv=fsync", 300s);
    ASSERT_TRUE(wrote) << wrote.error().message();
    expect_no_guest_io_error(g);
    json list = shadows();
    ASSERT_EQ(list.size(), 1u) << list.dump();
    EXPECT_EQ(list[0]["id"], id);
    EXPECT_EQ(list[0]["state"], "dropped") << list.dump();
    EXPECT_NE(list[0]["dropped_why"].get<std::string>().find("reached its maximum of 32.0 MiB"),
              std::string::npos)
        << list.dump();
    auto job = lab::run_checked({"virsh", "-c", lab::lab_uri(), "domjobinfo", g.name()});
    ASSERT_TRUE(job);
    EXPECT_NE(job->find("None"), std::string::npos) << *job;
    EXPECT_TRUE(scratch_leftovers().empty());
    EXPECT_EQ(run({"shadow", "delete", id}).exit_code, 0);
    EXPECT_TRUE(shadows().empty());
}

TEST_F(ShadowTest, StaleShadowIsCleanedByTheNextCommandAndABackupNamesALiveOne) {
    lab::LabGuest& g = boot_with_data_disk();
    auto checkpoint = run_vmshadow({"checkpoint", "create", g.name(), "before"});
    ASSERT_EQ(checkpoint.exit_code, 0) << checkpoint.out << checkpoint.err;
    fs::path files = dir / "files";
    fs::create_directories(files);
    auto created = run({"shadow", "create", g.name(), "--mount", files.string(), "--json"});
    ASSERT_EQ(created.exit_code, 0) << created.out << created.err;
    json shadow = json::parse(created.out);
    std::string id = shadow["id"];
    // The read-only file holds what the NBD export serves.
    for (const auto& d : shadow["disks"]) {
        if (d["disk"] != "vdb") continue;
        EXPECT_EQ(file_sha256(files / "vdb"), nbd_sha256(d["nbd_uri"]));
    }
    // A backup while the shadow holds the VM's one job fails at once, naming it.
    auto backup_out = backup({g.name()});
    EXPECT_NE(backup_out.exit_code, 0);
    EXPECT_NE(backup_out.out.find("shadow delete " + id), std::string::npos) << backup_out.out;
    // So are the checkpoint operations, which would change the disks' files under it (apply
    // would end it with the VM), before libvirt is asked.
    const std::vector<std::vector<std::string>> checkpoint_ops{
        {"create", g.name(), "during"},
        {"delete", g.name(), "before"},
        {"apply", g.name(), "before", "--yes"}};
    for (auto op : checkpoint_ops) {
        op.insert(op.begin(), "checkpoint");
        auto refused = run_vmshadow(op);
        EXPECT_EQ(refused.exit_code, 6) << op[1] << ": " << refused.out << refused.err;
        EXPECT_NE(refused.err.find("checkpoint " + op[1] + " refused: shadow copy " + id),
                  std::string::npos)
            << refused.err;
        EXPECT_NE(refused.err.find("`vmshadow shadow delete " + id + "`"), std::string::npos)
            << refused.err;
    }
    auto state = g.domain().state();
    ASSERT_TRUE(state);
    EXPECT_EQ(*state, virt::DomainState::running);
    EXPECT_EQ(shadows().size(), 1u) << "the shadow stays";

    // Its watcher dies: the shadow can no longer be bounded.
    std::ifstream in(shadow_dir / (id + ".json"));
    json record = json::parse(in);
    ASSERT_EQ(::kill(record["watcher"]["pid"].get<pid_t>(), SIGKILL), 0);
    std::this_thread::sleep_for(500ms);
    auto list = run({"shadow", "list", "--json"});
    ASSERT_EQ(list.exit_code, 0) << list.err;
    EXPECT_NE(list.err.find("shadow " + id), std::string::npos) << list.err;
    EXPECT_NE(list.err.find("watcher"), std::string::npos) << list.err;
    EXPECT_EQ(json::parse(list.out).size(), 0u) << list.out;
    auto job = lab::run_checked({"virsh", "-c", lab::lab_uri(), "domjobinfo", g.name()});
    ASSERT_TRUE(job);
    EXPECT_NE(job->find("None"), std::string::npos) << *job;
    EXPECT_TRUE(scratch_leftovers().empty());
    std::error_code ec;
    EXPECT_EQ(fs::symlink_status(files / "vdb", ec).type(), fs::file_type::not_found);
    // And the VM backs up again, and its checkpoint merges.
    EXPECT_EQ(backup({g.name()}).exit_code, 0);
    auto merged = run_vmshadow({"checkpoint", "delete", g.name(), "before"});
    EXPECT_EQ(merged.exit_code, 0) << merged.out << merged.err;
}

TEST_F(ShadowTest, GuestWithoutAnAgentGetsACrashConsistentShadowThatSaysWhy) {
    lab::GuestOptions o;
    o.agent_channel = false;  // no org.qemu.guest_agent.0 channel: nothing can freeze it
    o.data_disks = {{lab::DataDisk::Kind::ext4, "64M"}};
    lab::LabGuest& g = boot(o);
    // Bad input first: a disk the VM does not have leaves nothing behind.
    auto bad = run({"shadow", "create", g.name(), "--disk", "vdz"});
    EXPECT_EQ(bad.exit_code, 3) << bad.out << bad.err;  // not found
    EXPECT_NE(bad.err.find("vdz"), std::string::npos) << bad.err;
    EXPECT_TRUE(shadows().empty());
    EXPECT_TRUE(scratch_leftovers().empty());

    auto created = run({"shadow", "create", g.name(), "--json"});
    ASSERT_EQ(created.exit_code, 0) << created.out << created.err;
    json shadow = json::parse(created.out);
    EXPECT_EQ(shadow["consistency"], "crash");
    EXPECT_NE(shadow["consistency_reason"].get<std::string>().find("agent"), std::string::npos)
        << shadow.dump();
    EXPECT_EQ(shadow["disks"].size(), 2u) << shadow.dump();  // vda and vdb by default
    // A second shadow of the same VM is refused, naming the first.
    auto second = run({"shadow", "create", g.name()});
    EXPECT_EQ(second.exit_code, 6) << second.out << second.err;
    EXPECT_NE(second.err.find("shadow delete " + shadow["id"].get<std::string>()),
              std::string::npos)
        << second.err;
    EXPECT_EQ(shadows().size(), 1u);
    auto deleted = run({"shadow", "delete", shadow["id"]});
    EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
    EXPECT_TRUE(shadows().empty());
    EXPECT_TRUE(scratch_leftovers().empty());
    auto state = g.domain().state();
    ASSERT_TRUE(state);
    EXPECT_EQ(*state, virt::DomainState::running);
}

}  // namespace
}  // namespace vmshadow::testing
