// SPDX-License-Identifier: MIT
#include "vmwriter/method_choice.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace vmshadow::vmwriter {
namespace {

using ::testing::HasSubstr;
using virt::DomainState;

constexpr std::uint64_t kGiB = 1ULL << 30;

VmFacts running_vm_with_agent() {
    VmFacts f;
    f.name = "web1";
    f.state = DomainState::running;
    DiskFacts d;
    d.spec.target = "vda";
    d.spec.path = "/var/lib/libvirt/images/web1.qcow2";
    d.spec.format = "qcow2";
    d.sizes = virt::BlockInfo{20 * kGiB, 3 * kGiB, 3 * kGiB};
    f.disks.push_back(d);
    f.agent.channel = true;
    f.agent.channel_state = "connected";
    f.agent.answering = true;
    f.agent.filesystems = std::vector<virt::GuestFilesystem>{{"/", "vda1", "ext4", {"vda"}}};
    f.scratch.dir = "/var/tmp";
    f.scratch.free_bytes = 100 * kGiB;
    f.scratch.needed_bytes = scratch_needed(f.disks);
    return f;
}

std::string joined(const MethodChoice& c) {
    std::string out;
    for (const auto& r : c.reasons) out += r + "\n";
    return out;
}

TEST(MethodChoice, RunningVmWithAnsweringAgentGetsApplication) {
    auto c = choose_method(running_vm_with_agent(), {});
    EXPECT_EQ(c.method, BackupMethod::application);
    EXPECT_THAT(joined(c), HasSubstr("1 mounted filesystem"));
}

TEST(MethodChoice, NoAgentChannelFallsBackToCrashWhenSavedStateIsOff) {
    auto f = running_vm_with_agent();
    f.agent = {};
    auto c = choose_method(f, {.allow_saved_state = false});
    EXPECT_EQ(c.method, BackupMethod::crash);
    EXPECT_THAT(joined(c), HasSubstr("no guest agent channel"));
    EXPECT_THAT(joined(c), HasSubstr("--allow-saved-state"));
}

TEST(MethodChoice, NoAgentChannelGetsImageWhenSavedStateIsAllowed) {
    auto f = running_vm_with_agent();
    f.agent = {};
    auto c = choose_method(f, {.allow_saved_state = true});
    EXPECT_EQ(c.method, BackupMethod::image);
}

TEST(MethodChoice, HungAgentIsNamedWithItsError) {
    auto f = running_vm_with_agent();
    f.agent.answering = false;
    f.agent.filesystems.reset();
    f.agent.error = "Guest agent is not responding";
    auto c = choose_method(f, {});
    EXPECT_EQ(c.method, BackupMethod::crash);
    EXPECT_THAT(joined(c), HasSubstr("not answering: Guest agent is not responding"));
}

TEST(MethodChoice, DisconnectedAgentSaysToStartTheAgent) {
    auto f = running_vm_with_agent();
    f.agent.channel_state = "disconnected";
    f.agent.answering = false;
    auto c = choose_method(f, {});
    EXPECT_EQ(c.method, BackupMethod::crash);
    EXPECT_THAT(joined(c), HasSubstr("qemu-guest-agent running"));
}

TEST(MethodChoice, UnfreezableFilesystemIsNamedAndRulesOutApplication) {
    auto f = running_vm_with_agent();
    f.agent.filesystems->push_back({"/boot/efi", "vdb1", "vfat", {"vdb"}});
    auto c = choose_method(f, {});
    EXPECT_EQ(c.method, BackupMethod::crash);
    EXPECT_THAT(joined(c), HasSubstr("/boot/efi (vfat) cannot be frozen"));
}

TEST(MethodChoice, ShutOffVmIsOffline) {
    auto f = running_vm_with_agent();
    f.state = DomainState::shutoff;
    f.agent.channel_state.clear();
    f.agent.answering = false;
    EXPECT_EQ(choose_method(f, {}).method, BackupMethod::offline);
}

TEST(MethodChoice, ShutOffVmNeedsNoScratchSpace) {
    auto f = running_vm_with_agent();
    f.state = DomainState::shutoff;
    f.scratch.free_bytes = 0;
    EXPECT_EQ(choose_method(f, {}).method, BackupMethod::offline);
}

TEST(MethodChoice, MissingDiskFileMeansNoBackupAndNamesTheFile) {
    auto f = running_vm_with_agent();
    f.state = DomainState::shutoff;
    f.disks[0].source_missing = true;
    auto c = choose_method(f, {});
    EXPECT_EQ(c.method, BackupMethod::none);
    EXPECT_THAT(joined(c), HasSubstr("/var/lib/libvirt/images/web1.qcow2 does not exist"));
}

TEST(MethodChoice, MissingFileOfSkippedCdromDoesNotMatter) {
    auto f = running_vm_with_agent();
    DiskFacts cd;
    cd.spec.target = "sda";
    cd.spec.device = "cdrom";
    cd.spec.path = "/isos/gone.iso";
    cd.backed_up = false;
    cd.source_missing = true;
    f.disks.push_back(cd);
    EXPECT_EQ(choose_method(f, {}).method, BackupMethod::application);
}

TEST(MethodChoice, ShortScratchSpaceMeansNoLiveBackup) {
    auto f = running_vm_with_agent();
    f.scratch.free_bytes = 1 * kGiB;
    auto c = choose_method(f, {});
    EXPECT_EQ(c.method, BackupMethod::none);
    EXPECT_THAT(joined(c), HasSubstr("--scratch-dir"));
}

TEST(MethodChoice, PausedVmGetsImageOnlyWhenAllowed) {
    auto f = running_vm_with_agent();
    f.state = DomainState::paused;
    EXPECT_EQ(choose_method(f, {.allow_saved_state = false}).method, BackupMethod::crash);
    EXPECT_EQ(choose_method(f, {.allow_saved_state = true}).method, BackupMethod::image);
}

TEST(MethodChoice, CrashedVmCannotBeBackedUp) {
    auto f = running_vm_with_agent();
    f.state = DomainState::crashed;
    EXPECT_EQ(choose_method(f, {}).method, BackupMethod::none);
}

TEST(MethodChoice, ScratchNeedIsCappedAtTenGiBAndFollowsSmallDisks) {
    auto f = running_vm_with_agent();
    EXPECT_EQ(scratch_needed(f.disks), 10 * kGiB);
    f.disks[0].sizes->capacity = 256ULL << 20;
    EXPECT_EQ(scratch_needed(f.disks), 256ULL << 20);
}

TEST(MethodChoice, FreezableTypesIncludeLinuxAndWindowsFilesystems) {
    EXPECT_TRUE(filesystem_is_freezable("ext4"));
    EXPECT_TRUE(filesystem_is_freezable("xfs"));
    EXPECT_TRUE(filesystem_is_freezable("NTFS"));
    EXPECT_FALSE(filesystem_is_freezable("vfat"));
    EXPECT_FALSE(filesystem_is_freezable("fuseblk"));
}

TEST(MethodChoice, MethodNamesRoundTrip) {
    for (auto m : {BackupMethod::application, BackupMethod::image, BackupMethod::crash,
                   BackupMethod::offline}) {
        EXPECT_EQ(parse_method(method_name(m)), m);
    }
    EXPECT_FALSE(parse_method("auto"));
}

}  // namespace
}  // namespace vmshadow::vmwriter

namespace vmshadow::vmwriter {
namespace {

TEST(RequestedMethod, ApplicationWithoutAnAgentFailsWithTheCauseInsteadOfFallingBack) {
    auto f = running_vm_with_agent();
    f.agent = {};
    auto c = check_requested_method(f, BackupMethod::application);
    EXPECT_EQ(c.method, BackupMethod::none);
    EXPECT_THAT(joined(c), HasSubstr("--method application"));
    EXPECT_THAT(joined(c), HasSubstr("no guest agent channel"));
}

TEST(RequestedMethod, ImageIsAllowedWhenAskedWhateverThePolicy) {
    auto c = check_requested_method(running_vm_with_agent(), BackupMethod::image);
    EXPECT_EQ(c.method, BackupMethod::image);
}

TEST(RequestedMethod, LiveMethodsNeedARunningVm) {
    auto f = running_vm_with_agent();
    f.state = DomainState::shutoff;
    for (auto m : {BackupMethod::application, BackupMethod::image, BackupMethod::crash}) {
        auto c = check_requested_method(f, m);
        EXPECT_EQ(c.method, BackupMethod::none);
        EXPECT_THAT(joined(c), HasSubstr("shut off"));
    }
}

TEST(RequestedMethod, ApplicationOnAPausedVmSuggestsImage) {
    auto f = running_vm_with_agent();
    f.state = DomainState::paused;
    auto c = check_requested_method(f, BackupMethod::application);
    EXPECT_EQ(c.method, BackupMethod::none);
    EXPECT_THAT(joined(c), HasSubstr("--method image"));
}

}  // namespace
}  // namespace vmshadow::vmwriter
