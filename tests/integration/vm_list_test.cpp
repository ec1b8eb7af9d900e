// SPDX-License-Identifier: MIT
// `vmshadow vm list` on real lab guests: the method and reasons each kind of guest gets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "integration/cli_runner.h"
#include "lab/lab_guest.h"

namespace vmshadow {
namespace {

using lab::AgentMode;
using lab::DataDisk;
using lab::GuestOptions;
using lab::LabGuest;
using nlohmann::json;
using ::testing::HasSubstr;
using testing::run_vmshadow;

LabGuest booted(const GuestOptions& options, std::string_view test, bool wait_agent = true) {
    auto guest = LabGuest::create(options, test);
    EXPECT_TRUE(guest) << guest.error().message();
    if (!guest) throw std::runtime_error(guest.error().message());
    auto started = guest->start();
    if (!started) throw std::runtime_error(started.error().message());
    if (wait_agent) {
        auto up = guest->wait_for_agent();
        if (!up) throw std::runtime_error(up.error().message());
    }
    return std::move(*guest);
}

// The one VM's entry of `vm list --json NAME`.
json listed(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"vm", "list", "--json", name};
    args.insert(args.end(), extra.begin(), extra.end());
    auto run = run_vmshadow(args);
    EXPECT_EQ(run.exit_code, 0) << run.err;
    auto doc = json::parse(run.out, nullptr, false);
    EXPECT_TRUE(doc.is_array() && doc.size() == 1) << run.out;
    if (!doc.is_array() || doc.size() != 1) return json::object();
    return doc[0];
}

std::string reasons_of(const json& vm) {
    std::string out;
    for (const auto& r : vm.value("reasons", json::array())) out += r.get<std::string>() + "\n";
    return out;
}

TEST(VmList, RunningGuestWithAgentGetsApplication) {
    auto guest = booted({}, "list-app");
    auto vm = listed(guest.name());
    EXPECT_EQ(vm["name"], guest.name());
    EXPECT_EQ(vm["state"], "running");
    EXPECT_EQ(vm["method"], "application") << reasons_of(vm);
    ASSERT_EQ(vm["disks"].size(), 1u);
    const auto& vda = vm["disks"][0];
    EXPECT_EQ(vda["target"], "vda");
    EXPECT_EQ(vda["format"], "qcow2");
    EXPECT_EQ(vda["path"], guest.disk_path("vda").string());
    EXPECT_GT(vda["virtual_size"].get<std::uint64_t>(), 0u);
    EXPECT_GT(vda["allocated"].get<std::uint64_t>(), 0u);
    EXPECT_TRUE(vm["agent"]["answering"].get<bool>());
}

TEST(VmList, GuestWithoutAgentChannelGetsCrashOrImageWhenAllowed) {
    auto guest = booted({.agent_channel = false}, "list-noagent", false);
    auto vm = listed(guest.name());
    EXPECT_EQ(vm["method"], "crash");
    EXPECT_THAT(reasons_of(vm), HasSubstr("no guest agent channel"));
    auto allowed = listed(guest.name(), {"--allow-saved-state"});
    EXPECT_EQ(allowed["method"], "image");
}

TEST(VmList, SavedStatePolicyComesFromTheConfigFile) {
    auto guest = booted({.agent_channel = false}, "list-config", false);
    auto conf = guest.dir() / "vmshadow.conf";
    {
        std::ofstream out(conf);
        out << "allow-saved-state = true\n";
    }
    auto vm = listed(guest.name(), {"--config", conf.string()});
    EXPECT_EQ(vm["method"], "image") << reasons_of(vm);
}

TEST(VmList, HungAgentIsReportedAsNotAnswering) {
    auto guest = booted({.agent = AgentMode::hang}, "list-hung", false);
    ASSERT_TRUE(guest.wait_for_serial("lab: agent stopped"));
    auto start = std::chrono::steady_clock::now();
    auto vm = listed(guest.name());
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(vm["method"], "crash");
    EXPECT_THAT(reasons_of(vm), HasSubstr("guest agent not answering"));
    // Bounded by the agent timeout, not a hang (a functional bound, far above any noise).
    EXPECT_LT(took, std::chrono::seconds(60));
}

TEST(VmList, UnfreezableFilesystemIsNamed) {
    auto guest = booted({.data_disks = {DataDisk{DataDisk::Kind::vfat, "64M"}}}, "list-vfat");
    ASSERT_TRUE(guest.wait_for_serial("lab: ready"));
    auto vm = listed(guest.name());
    EXPECT_EQ(vm["method"], "crash");
    EXPECT_THAT(reasons_of(vm), HasSubstr("(vfat) cannot be frozen"));
    EXPECT_EQ(vm["disks"].size(), 2u);
}

TEST(VmList, ShutOffGuestIsOfflineAndMissingDiskFileIsNamed) {
    auto guest =
        LabGuest::create({.data_disks = {DataDisk{DataDisk::Kind::ext4, "16M"}}}, "list-offline");
    ASSERT_TRUE(guest) << guest.error().message();
    auto vm = listed(guest->name());
    EXPECT_EQ(vm["state"], "shutoff");
    EXPECT_EQ(vm["method"], "offline");

    std::filesystem::remove(guest->disk_path("vdb"));
    vm = listed(guest->name());
    EXPECT_EQ(vm["method"], "none");
    EXPECT_THAT(reasons_of(vm), HasSubstr(guest->disk_path("vdb").string() + " does not exist"));
}

TEST(VmList, UnknownVmIsAOneLineErrorWithExitCode3) {
    std::string name = "vmshadow-test-no-such-vm-" + std::to_string(::getpid());
    auto run = run_vmshadow({"vm", "list", name});
    EXPECT_EQ(run.exit_code, 3);
    EXPECT_THAT(run.err, HasSubstr("vm '" + name + "' not found"));
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1);
}

TEST(VmList, UnreachableLibvirtIsAOneLineErrorWithExitCode4) {
    auto run =
        run_vmshadow({"--connect", "qemu+unix:///system?socket=/nonexistent.sock", "vm", "list"});
    EXPECT_EQ(run.exit_code, 4);
    EXPECT_THAT(run.err, HasSubstr("libvirtd running"));
}

}  // namespace
}  // namespace vmshadow
