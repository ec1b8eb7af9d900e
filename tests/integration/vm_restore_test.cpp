// SPDX-License-Identifier: MIT
// `vmshadow restore` on real TCG lab guests: --as beside the running original (new identity,
// boots: the agent lives on the restored disk), in place with --replace (refused without it),
// a saved-state point that resumes where it was, and errors that change nothing.
#include <thread>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

TEST_F(VmBackupTest, RestoreAsRunsBesideTheOriginalWithItsOwnIdentityAndBoots) {
    lab::GuestOptions o;
    o.nic = true;
    lab::LabGuest& g = boot(o);
    json vm = backup_ok({g.name()});
    RestoredVm copy{g.name().substr(0, 40) + "-copy", dir / "copy"};
    auto out = run({"restore", vm["point"].get<std::string>(), "--as", copy.name, "--to",
                    copy.folder.string(), "--start", "--json"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    auto j = json::parse(out.out);
    EXPECT_EQ(j["vm"], copy.name);
    EXPECT_TRUE(j["started"].get<bool>());
    ASSERT_TRUE(agent_answers(copy.name, 180s)) << "the restored disk boots to its agent";
    std::string original = dumpxml(g.name()), restored = dumpxml(copy.name);
    auto uuid = [](const std::string& x) {
        auto a = x.find("<uuid>");
        return x.substr(a, 50);
    };
    EXPECT_NE(uuid(original), uuid(restored));
    auto mac = [](const std::string& x) {
        auto a = x.find("<mac address=");
        return a == std::string::npos ? std::string() : x.substr(a, 40);
    };
    EXPECT_NE(mac(original), mac(restored));
    EXPECT_NE(restored.find(copy.folder.string() + "/serial.log"), std::string::npos);
    EXPECT_NE(restored.find(copy.folder.string() + "/root.qcow2"), std::string::npos) << restored;
    auto s = g.domain().state();
    ASSERT_TRUE(s);
    EXPECT_EQ(*s, virt::DomainState::running) << "the original keeps running";
}

TEST_F(VmBackupTest, RestoreInPlaceNeedsReplaceAndThenTheNextBackupIsFull) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo before > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name()});
    ASSERT_TRUE(g.exec("echo after > /var/lib/lab/marker && sync"));

    auto refused = run({"restore", vm["point"].get<std::string>()});
    EXPECT_EQ(refused.exit_code, 6) << refused.err;  // conflict
    EXPECT_NE(refused.err.find("--replace"), std::string::npos) << refused.err;
    EXPECT_TRUE(scratch_leftovers().empty());
    for (const auto& e : fs::directory_iterator(g.dir()))
        EXPECT_EQ(e.path().string().find(".vmshadow-restore"), std::string::npos) << e.path();

    auto out = run({"restore", vm["point"].get<std::string>(), "--replace", "--start", "--json"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    EXPECT_TRUE(json::parse(out.out)["replaced"].get<bool>());
    ASSERT_TRUE(agent_answers(g.name(), 180s));
    auto marker = g.read_file("/var/lib/lab/marker");
    ASSERT_TRUE(marker) << marker.error().message();
    EXPECT_EQ(*marker, "before\n") << "the disk is the restore point's";
    json next = backup_ok({g.name()});
    EXPECT_EQ(mode_of(next, "vda"), "full") << next.dump(2);
}

TEST_F(VmBackupTest, SavedStatePointRestoredInPlaceResumesWhereItWas) {
    lab::GuestOptions o;
    o.workload = true;
    lab::LabGuest& g = boot(o);
    std::this_thread::sleep_for(2s);
    json vm = backup_ok({g.name(), "--method", "image"});
    ASSERT_EQ(vm["consistency"], "image");
    std::this_thread::sleep_for(3s);
    auto before = g.last_committed_row();
    ASSERT_TRUE(before);
    auto out = run({"restore", vm["point"].get<std::string>(), "--replace", "--json"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    auto j = json::parse(out.out);
    EXPECT_TRUE(j["resumed"].get<bool>());
    ASSERT_TRUE(agent_answers(g.name(), 60s));
    auto resumed_at = g.last_committed_row();
    ASSERT_TRUE(resumed_at);
    EXPECT_LT(*resumed_at, *before) << "memory came back from the restore point";
    std::this_thread::sleep_for(3s);
    auto later = g.last_committed_row();
    ASSERT_TRUE(later);
    EXPECT_GT(*later, *resumed_at) << "the workload continues where it was";
}

TEST_F(VmBackupTest, InstantRecoveryRunsFromTheRepositoryThenSwitchesToLocalDisks) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo instant > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    RestoredVm copy{g.name().substr(0, 40) + "-ir", dir / "instant"};
    auto out = run(
        {"restore", point, "--instant", "--as", copy.name, "--to", copy.folder.string(), "--json"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    auto j = json::parse(out.out);
    EXPECT_TRUE(j["instant"].get<bool>());
    EXPECT_TRUE(j["started"].get<bool>());
    // Switched without stopping: local qcow2 images, persistent, no NBD left.
    std::string xml = dumpxml(copy.name);
    EXPECT_NE(xml.find(copy.folder.string() + "/root.qcow2"), std::string::npos) << xml;
    EXPECT_EQ(xml.find("protocol='nbd'"), std::string::npos) << xml;
    auto info = lab::run_checked({"virsh", "-c", lab::lab_uri(), "dominfo", copy.name});
    ASSERT_TRUE(info);
    EXPECT_NE(info->find("Persistent:     yes"), std::string::npos) << *info;
    ASSERT_TRUE(agent_answers(copy.name, 180s));
    auto marker = lab::run_process(
        {"virsh", "-c", lab::lab_uri(), "qemu-agent-command", copy.name,
         R"({"execute":"guest-file-open","arguments":{"path":"/var/lib/lab/marker"}})"});
    ASSERT_TRUE(marker);
    EXPECT_EQ(marker->exit_code, 0) << marker->err << " the restored disk holds the marker";
    auto nbdkit = lab::run_process({"pgrep", "-f", "point=" + point});
    ASSERT_TRUE(nbdkit);
    EXPECT_NE(nbdkit->exit_code, 0) << "no NBD server left: " << nbdkit->out;
    EXPECT_FALSE(fs::exists(copy.folder / (".vmshadow-instant-" + copy.name)));
}

TEST_F(VmBackupTest, RestoreOfAnUnknownPointFailsAndChangesNothing) {
    auto out = run({"restore", "nosuchvm@latest"});
    EXPECT_EQ(out.exit_code, 3) << out.err;
    EXPECT_NE(out.err.find("nosuchvm"), std::string::npos) << out.err;
}

}  // namespace
}  // namespace vmshadow::testing
