// SPDX-License-Identifier: MIT
// The lab itself, on real TCG guests: a guest boots from its own disk and its agent answers,
// the workload commits, the fsfreeze hook leaves a consistent database on the frozen disk,
// a vfat disk is mounted but not frozen, and a hung agent costs a bounded wait.
#include "lab/lab_guest.h"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace vmshadow::lab {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string test_name() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// Creates and starts a guest; the test fails (and the guest is removed) when it can't.
LabGuest boot(const GuestOptions& options, bool wait_agent = true) {
    auto guest = LabGuest::create(options, test_name());
    if (!guest) throw std::runtime_error("create: " + guest.error().message());
    auto started = guest->start();
    if (!started) throw std::runtime_error(started.error().message());
    if (wait_agent) {
        auto booted = Clock::now();
        auto ready = guest->wait_for_agent();
        if (!ready) throw std::runtime_error(ready.error().message());
        ::testing::Test::RecordProperty("boot_to_agent_ms",
                                        static_cast<int>(seconds_since(booted) * 1000));
        std::printf("[lab] %s: agent answered %.1f s after start\n", guest->name().c_str(),
                    seconds_since(booted));
    }
    return std::move(*guest);
}

// Waits until the workload has committed past `row`.
std::int64_t wait_for_row_after(LabGuest& guest, std::int64_t row, std::chrono::seconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::int64_t last = -1;
    while (Clock::now() < deadline) {
        auto r = guest.last_committed_row();
        if (r && *r > row) return *r;
        if (r) last = *r;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return last;
}

// Thaws on every path out of a test that froze the guest (the guest is destroyed anyway,
// but a thaw keeps later assertions about the guest meaningful).
struct ThawOnExit {
    virDomainPtr dom;
    bool armed = true;
    ~ThawOnExit() {
        if (armed) virDomainFSThaw(dom, nullptr, 0, 0);
    }
};

TEST(lab, LabGuestBootsAndAgentAnswers) {
    std::string name;
    std::filesystem::path dir;
    {
        LabGuest guest = boot({});
        name = guest.name();
        dir = guest.dir();
        EXPECT_TRUE(name.starts_with("vmshadow-test-LabGuestBootsAndAgentAnswers-"));
        auto cmdline = guest.exec("cat /proc/cmdline");
        ASSERT_TRUE(cmdline) << cmdline.error().message();
        EXPECT_NE(cmdline->find("lab.agent=on"), std::string::npos) << *cmdline;
        // Everything but the virtio drivers runs from the guest's own disk.
        auto root = guest.exec("grep ' / ' /proc/mounts");
        ASSERT_TRUE(root) << root.error().message();
        EXPECT_EQ(root->rfind("/dev/vda / ext4", 0), 0u) << *root;
        EXPECT_NE(guest.serial_output().find("lab: ready"), std::string::npos);
    }
    // The destructor removed the domain and its files.
    auto conn = virt::Connection::open(lab_uri());
    ASSERT_TRUE(conn) << conn.error().message();
    auto gone = conn->lookup(name);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().kind(), ErrorKind::not_found);
    EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(lab, WorkloadCommitsRowsSteadily) {
    LabGuest guest = boot({.workload = true});
    auto first = guest.last_committed_row();
    ASSERT_TRUE(first) << first.error().message();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    auto second = guest.last_committed_row();
    ASSERT_TRUE(second) << second.error().message();
    // ~4 commits/s when idle; a loaded host may halve that.
    EXPECT_GE(*second - *first, 3) << "rows " << *first << " -> " << *second;
    // The database agrees with the workload's own count.
    auto in_db = guest.exec("sqlite3 /var/lib/lab/db.sqlite 'SELECT max(id) FROM rows'");
    ASSERT_TRUE(in_db) << in_db.error().message();
    EXPECT_GE(std::stoll(*in_db), *second);
}

TEST(lab, FreezeHookCheckpointsWalAndPausesWriter) {
    LabGuest guest = boot({.workload = true});
    ASSERT_GE(wait_for_row_after(guest, 2, std::chrono::seconds(30)), 3);

    auto freeze_start = Clock::now();
    int frozen = virDomainFSFreeze(guest.domain().raw(), nullptr, 0, 0);
    double freeze_s = seconds_since(freeze_start);
    ASSERT_GE(frozen, 1) << "freeze failed: " << virGetLastErrorMessage() << "; serial:\n"
                         << guest.serial_output();
    ThawOnExit thaw_guard{guest.domain().raw()};
    RecordProperty("freeze_ms", static_cast<int>(freeze_s * 1000));
    std::printf("[lab] freeze (agent + hook) took %.0f ms\n", freeze_s * 1000);

    // What a backup of the frozen disk sees: an empty WAL and a complete database file.
    std::filesystem::path root = guest.disk_path("vda");
    auto wal = read_file_from_image(root, "/var/lib/lab/db.sqlite-wal");
    ASSERT_TRUE(wal) << wal.error().message();
    EXPECT_EQ(wal->size(), 0u);

    auto copy_db = [&](const std::string& suffix) -> std::int64_t {
        auto db = read_file_from_image(root, "/var/lib/lab/db.sqlite");
        if (!db) {
            ADD_FAILURE() << db.error().message();
            return -1;
        }
        std::filesystem::path file = guest.dir() / ("frozen-" + suffix + ".sqlite");
        std::ofstream(file, std::ios::binary) << *db;
        auto max = sqlite_max_row(file);
        if (!max) ADD_FAILURE() << max.error().message();
        return max ? *max : -1;
    };
    std::int64_t at_freeze = copy_db("a");
    EXPECT_GE(at_freeze, 3);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_EQ(copy_db("b"), at_freeze) << "rows were committed while frozen";

    thaw_guard.armed = false;
    ASSERT_GE(virDomainFSThaw(guest.domain().raw(), nullptr, 0, 0), 1);

    // The writer stopped exactly at the row the frozen disk holds, and resumed from it.
    auto events = guest.read_file("/run/lab/events");
    ASSERT_TRUE(events) << events.error().message();
    std::string expected =
        "paused " + std::to_string(at_freeze) + "\nresumed " + std::to_string(at_freeze) + "\n";
    EXPECT_EQ(*events, expected);
    EXPECT_GT(wait_for_row_after(guest, at_freeze, std::chrono::seconds(10)), at_freeze);

    auto hook_log = guest.read_file("/var/log/fsfreeze-hook.log");
    ASSERT_TRUE(hook_log) << hook_log.error().message();
    EXPECT_NE(hook_log->find("freeze: writer paused at row " + std::to_string(at_freeze)),
              std::string::npos)
        << *hook_log;
    std::printf("[lab] hook log:\n%s", hook_log->c_str());
}

TEST(lab, VfatDataDiskIsMountedButNotFrozen) {
    LabGuest guest = boot({.data_disks = {{DataDisk::Kind::vfat, "64M"},
                                          {DataDisk::Kind::ext4, "64M"},
                                          {DataDisk::Kind::blank, "16M"}}});
    auto info = guest.agent_command(R"({"execute":"guest-get-fsinfo"})");
    ASSERT_TRUE(info) << info.error().message();
    json filesystems = json::parse(*info);
    std::map<std::string, std::string> type_at;
    for (const auto& f : filesystems) type_at[f.value("mountpoint", "")] = f.value("type", "");
    EXPECT_EQ(type_at["/"], "ext4");
    EXPECT_EQ(type_at["/data/vdb"], "vfat") << *info;
    EXPECT_EQ(type_at["/data/vdc"], "ext4") << *info;
    EXPECT_EQ(type_at.count("/data/vdd"), 0u) << "a blank disk has nothing to mount";

    auto freeze_start = Clock::now();
    int frozen = virDomainFSFreeze(guest.domain().raw(), nullptr, 0, 0);
    ThawOnExit thaw_guard{guest.domain().raw()};
    std::printf("[lab] freeze without workload (hook has nothing to pause) took %.0f ms\n",
                seconds_since(freeze_start) * 1000);
    // The agent skips the filesystem it cannot freeze instead of failing: only a count
    // lower than the filesystem list tells.
    EXPECT_EQ(frozen, static_cast<int>(filesystems.size()) - 1);
    thaw_guard.armed = false;
    EXPECT_EQ(virDomainFSThaw(guest.domain().raw(), nullptr, 0, 0), frozen);
}

TEST(lab, HungAgentTimesOut) {
    // Also the one lab test of a raw root disk and a NIC on the lab network.
    LabGuest guest = boot({.agent = AgentMode::hang, .nic = true, .root_format = "raw"},
                          /*wait_agent=*/false);
    EXPECT_TRUE(std::filesystem::exists(guest.disk_path("vda")));
    EXPECT_EQ(guest.disk_path("vda").extension(), ".raw");
    auto hung = guest.wait_for_serial("lab: agent stopped (hang)");
    ASSERT_TRUE(hung) << hung.error().message();

    auto start = Clock::now();
    auto pong = guest.agent_command(R"({"execute":"guest-ping"})", std::chrono::seconds(2));
    double waited = seconds_since(start);
    ASSERT_FALSE(pong) << "a stopped agent answered: " << *pong;
    EXPECT_EQ(pong.error().kind(), ErrorKind::unavailable) << pong.error().message();
    EXPECT_GE(waited, 1.5);
    EXPECT_LT(waited, 6.0) << "the 2 s timeout was not honoured";
    auto nic = guest.domain().xml();
    ASSERT_TRUE(nic) << nic.error().message();
    EXPECT_NE(nic->find("<source network='vmshadow-lab'"), std::string::npos);
    std::printf("[lab] hung agent: ping failed after %.1f s: %s\n", waited,
                pong.error().message().c_str());
}

TEST(lab, NoAgentChannelFailsFast) {
    LabGuest guest = boot({.agent_channel = false}, /*wait_agent=*/false);
    auto ready = guest.wait_for_serial("lab: ready");
    ASSERT_TRUE(ready) << ready.error().message();
    EXPECT_NE(guest.serial_output().find("no org.qemu.guest_agent.0 port"), std::string::npos);

    auto start = Clock::now();
    auto waited = guest.wait_for_agent(std::chrono::seconds(30));
    ASSERT_FALSE(waited);
    EXPECT_EQ(waited.error().kind(), ErrorKind::unsupported) << waited.error().message();
    EXPECT_LT(seconds_since(start), 5.0);
}

}  // namespace
}  // namespace vmshadow::lab
