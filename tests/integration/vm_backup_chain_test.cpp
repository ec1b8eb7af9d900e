// SPDX-License-Identifier: MIT
// The incremental chain heals itself: one named scenario per way it breaks on a real guest —
// a VM restart, QEMU killed (bitmaps left "in-use"), a disk added, checkpoint metadata lost
// (libvirt reinstalled), and a second repository keeping its own chain of the same VM.
#include <signal.h>

#include <fstream>
#include <thread>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;
using lab::DataDisk;
using lab::GuestOptions;

bool wait_state(const lab::LabGuest& g, virt::DomainState want, std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(250ms)) {
        auto s = g.domain().state();
        if (s && *s == want) return true;
    }
    return false;
}

bool notes_mention(const json& vm, const std::string& text) {
    for (const auto& n : vm["notes"])
        if (n.get<std::string>().find(text) != std::string::npos) return true;
    return false;
}

TEST_F(VmBackupTest, ChainSurvivesAVmRestart) {
    lab::LabGuest& g = boot({});
    json first = backup_ok({g.name()});
    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "shutdown", g.name()}));
    ASSERT_TRUE(wait_state(g, virt::DomainState::shutoff, 120s));
    ASSERT_TRUE(g.start());
    ASSERT_TRUE(g.wait_for_agent());
    json second = backup_ok({g.name()});
    EXPECT_EQ(second["incremental_from"], first["checkpoint"]) << second.dump(2);
    EXPECT_EQ(mode_of(second, "vda"), "incremental");
}

TEST_F(VmBackupTest, ChainBrokenByAQemuCrashFallsBackToFullAndHeals) {
    lab::LabGuest& g = boot({});
    json first = backup_ok({g.name()});
    std::ifstream pid_file("/run/libvirt/qemu/" + g.name() + ".pid");
    pid_t qemu = 0;
    pid_file >> qemu;
    ASSERT_GT(qemu, 0);
    ::kill(qemu, SIGKILL);  // the qcow2's bitmaps stay marked in-use
    ASSERT_TRUE(wait_state(g, virt::DomainState::shutoff, 60s));
    ASSERT_TRUE(g.start());
    ASSERT_TRUE(g.wait_for_agent());

    json second = backup_ok({g.name()});
    EXPECT_TRUE(second["incremental_from"].is_null()) << second.dump(2);
    EXPECT_EQ(mode_of(second, "vda"), "full");
    EXPECT_TRUE(notes_mention(second, "incremental chain broken")) << second.dump(2);
    EXPECT_LT(second["bytes_added"].get<std::uint64_t>(),
              first["bytes_added"].get<std::uint64_t>() / 2)
        << "the full read is deduplicated against the last point";

    json third = backup_ok({g.name()});
    EXPECT_EQ(third["incremental_from"], second["checkpoint"]) << "healed";
    EXPECT_EQ(mode_of(third, "vda"), "incremental");
    auto names = checkpoints(g);
    ASSERT_EQ(names.size(), 1u);
    EXPECT_EQ(names[0], third["checkpoint"]);
}

TEST_F(VmBackupTest, DiskAddedIsReadInFullWhileTheOthersStayIncremental) {
    lab::LabGuest& g = boot({});
    json first = backup_ok({g.name()});
    fs::path added = g.dir() / "added-vdc.qcow2";
    ASSERT_TRUE(
        lab::run_checked({"qemu-img", "create", "-q", "-f", "qcow2", added.string(), "64M"}));
    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "attach-disk", g.name(),
                                  added.string(), "vdc", "--driver", "qemu", "--subdriver", "qcow2",
                                  "--live", "--config"}));
    json second = backup_ok({g.name()});
    EXPECT_EQ(second["incremental_from"], first["checkpoint"]) << second.dump(2);
    EXPECT_EQ(mode_of(second, "vda"), "incremental");
    const json* vdc = disk_of(second, "vdc");
    ASSERT_NE(vdc, nullptr) << second.dump(2);
    EXPECT_EQ(vdc->at("mode"), "full");
    EXPECT_NE(vdc->at("note").get<std::string>().find("disk added"), std::string::npos);
    json third = backup_ok({g.name()});
    EXPECT_EQ(mode_of(third, "vdc"), "incremental") << third.dump(2);
}

TEST_F(VmBackupTest, CheckpointMetadataLostIsRedefinedFromTheRestorePoint) {
    lab::LabGuest& g = boot({});
    json first = backup_ok({g.name()});
    const std::string checkpoint = first["checkpoint"];
    // What a libvirt reinstall does: the metadata goes, the bitmaps stay in the qcow2.
    ASSERT_TRUE(lab::run_checked(
        {"virsh", "-c", lab::lab_uri(), "checkpoint-delete", g.name(), checkpoint, "--metadata"}));
    ASSERT_TRUE(checkpoints(g).empty());
    json second = backup_ok({g.name()});
    EXPECT_TRUE(notes_mention(second, "redefined")) << second.dump(2);
    EXPECT_EQ(second["incremental_from"], checkpoint);
    EXPECT_EQ(mode_of(second, "vda"), "incremental");
}

TEST_F(VmBackupTest, TwoRepositoriesKeepTheirOwnChains) {
    lab::LabGuest& g = boot({});
    fs::path other = dir / "other-repo";
    ASSERT_EQ(run_vmshadow({"repo", "init", other.string()}).exit_code, 0);
    auto backup_to = [&](const fs::path& r) {
        auto out = run_vmshadow({"--repo", r.string(), "--scratch-dir", scratch.string(), "backup",
                                 "--json", g.name(), "--writers-dir", writers_dir.string(),
                                 "--state-file", state_file.string()});
        EXPECT_EQ(out.exit_code, 0) << out.out << out.err;
        return json::parse(out.out)["vms"][0];
    };
    json a1 = backup_to(repo);
    json b1 = backup_to(other);
    json a2 = backup_to(repo);
    json b2 = backup_to(other);
    EXPECT_EQ(a2["incremental_from"], a1["checkpoint"]);
    EXPECT_EQ(b2["incremental_from"], b1["checkpoint"]);
    EXPECT_EQ(mode_of(b2, "vda"), "incremental");
    auto names = checkpoints(g);
    EXPECT_EQ(names.size(), 2u) << "one per repository";
}

}  // namespace
}  // namespace vmshadow::testing
