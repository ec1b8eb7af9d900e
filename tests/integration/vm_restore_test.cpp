// SPDX-License-Identifier: MIT
// `vmshadow restore` on real TCG lab guests: --as beside the running original (new identity,
// boots: the agent lives on the restored disk), in place with --replace (refused without it),
// a saved-state point that resumes where it was, and errors that change nothing; both kinds
// boot holding exactly the database rows committed at the backup's freeze; a NIC whose network
// is gone comes back with its link down; a failed in-place restore leaves the original VM
// defined and running, or says what state things are in and how to retry.
#include <sys/types.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "integration/repo_damage.h"
#include "integration/vm_backup_fixture.h"
#include "virt/connection.h"
#include "virt/guest_agent.h"

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

std::string random_hex(int n) {
    std::random_device rd;
    std::string out;
    for (int i = 0; i < n; ++i) out += "0123456789abcdef"[rd() % 16];
    return out;
}

// The last "paused N" line of the workload's event log: the last row committed before the
// freeze hook paused it (as vm_backup_test.cpp reads it).
std::int64_t last_paused_row(lab::LabGuest& g) {
    auto events = g.read_file("/run/lab/events");
    if (!events) throw std::runtime_error(events.error().message());
    std::int64_t row = -1;
    std::size_t pos = 0;
    while ((pos = events->find("paused ", pos)) != std::string::npos) {
        row = std::stoll(events->substr(pos + 7));
        pos += 7;
    }
    return row;
}

// The N of every "workload: started at row N" line of VM `vm`'s /var/log/workload.log, read
// through its guest agent: the workload logs max(id) of its table each time the guest boots.
std::vector<std::int64_t> workload_starts(const std::string& vm) {
    std::vector<std::int64_t> rows;
    auto connection = virt::Connection::open(lab::lab_uri());
    if (!connection) return rows;
    auto domain = connection->lookup(vm);
    if (!domain) return rows;
    virt::GuestAgent agent(*domain, std::chrono::seconds(30));
    auto r = agent.exec(R"(sed -n 's/.*started at row \([0-9]*\).*/\1/p' /var/log/workload.log)",
                        std::chrono::seconds(60));
    if (!r || r->exit_code != 0) return rows;
    std::istringstream in(r->out);
    for (std::int64_t n; in >> n;) rows.push_back(n);
    return rows;
}

// workload_starts() once it has `count` entries (the restored guest's own start logged).
std::vector<std::int64_t> workload_starts(const std::string& vm, std::size_t count) {
    std::vector<std::int64_t> rows;
    for (int i = 0; i < 60; ++i, std::this_thread::sleep_for(1s))
        if ((rows = workload_starts(vm)).size() >= count) break;
    return rows;
}

// Files a restore writes beside the old ones (*.vmshadow-restore, *.vmshadow-partial...).
std::vector<std::string> restore_leftovers(const fs::path& folder) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(folder))
        if (e.path().filename().string().find(".vmshadow-") != std::string::npos)
            out.push_back(e.path().string());
    return out;
}

bool is_defined(const std::string& vm) {
    auto r = lab::run_process({"virsh", "-c", lab::lab_uri(), "dominfo", vm});
    return r && r->exit_code == 0;
}

TEST_F(VmBackupTest, RestoreInPlaceAndAsBothBootHoldingTheRowsCommittedAtTheFreeze) {
    lab::GuestOptions o;
    o.workload = true;
    lab::LabGuest& g = boot(o);
    std::this_thread::sleep_for(2s);  // some rows committed
    json vm = backup_ok({g.name()});
    ASSERT_EQ(vm["consistency"], "application") << vm.dump(2);
    const std::string point = vm["point"];
    const std::int64_t frozen_at = last_paused_row(g);
    ASSERT_GT(frozen_at, 0);
    const std::size_t boots = workload_starts(g.name()).size();  // the log as backed up
    ASSERT_GT(boots, 0u);

    // --as: the copy's workload starts on the restored database at exactly the frozen rows.
    RestoredVm copy{g.name().substr(0, 40) + "-rows", dir / "rows"};
    auto as = run(
        {"restore", point, "--as", copy.name, "--to", copy.folder.string(), "--start", "--json"});
    ASSERT_EQ(as.exit_code, 0) << as.out << as.err;
    EXPECT_TRUE(json::parse(as.out)["started"].get<bool>());
    ASSERT_TRUE(agent_answers(copy.name, 240s)) << "the restored disk boots to its agent";
    auto copy_starts = workload_starts(copy.name, boots + 1);
    ASSERT_EQ(copy_starts.size(), boots + 1) << "the restored guest's workload started";
    EXPECT_EQ(copy_starts.back(), frozen_at) << "exactly the rows committed at the freeze";
    // One TCG guest at a time boots faster: the copy has shown what it had to.
    (void)lab::run_process({"virsh", "-c", lab::lab_uri(), "destroy", copy.name});

    // In place: the same rows, in the VM of the original name.
    auto in_place = run({"restore", point, "--replace", "--start", "--json"});
    ASSERT_EQ(in_place.exit_code, 0) << in_place.out << in_place.err;
    auto j = json::parse(in_place.out);
    EXPECT_TRUE(j["replaced"].get<bool>());
    EXPECT_TRUE(j["started"].get<bool>());
    ASSERT_TRUE(agent_answers(g.name(), 240s));
    auto starts = workload_starts(g.name(), boots + 1);
    ASSERT_EQ(starts.size(), boots + 1) << "the restored guest's workload started";
    EXPECT_EQ(starts.back(), frozen_at) << "exactly the rows committed at the freeze";
    EXPECT_TRUE(restore_leftovers(g.dir()).empty());
}

// A libvirt network of the test's own, destroyed and undefined however the test ends.
struct ThrowawayNetwork {
    std::string name;
    ~ThrowawayNetwork() { remove(); }
    void remove() const {
        (void)lab::run_process({"virsh", "-c", lab::lab_uri(), "net-destroy", name});
        (void)lab::run_process({"virsh", "-c", lab::lab_uri(), "net-undefine", name});
    }
};

TEST_F(VmBackupTest, NicWhoseNetworkWasRemovedComesBackWithItsLinkDownAndANote) {
    // Isolated, no address (nothing to serve): only the NIC's attachment matters here.
    const std::string id = random_hex(6);
    ThrowawayNetwork net{"vmshadow-test-gone-" + std::to_string(getpid()) + "-" + id};
    fs::path net_xml = dir / "network.xml";
    {
        std::ofstream out(net_xml);
        out << "<network><name>" << net.name << "</name><bridge name='vmshg" << id
            << "' stp='off' delay='0'/></network>\n";
    }
    auto defined =
        lab::run_process({"virsh", "-c", lab::lab_uri(), "net-define", net_xml.string()});
    ASSERT_TRUE(defined && defined->exit_code == 0) << (defined ? defined->err : "");
    auto started = lab::run_process({"virsh", "-c", lab::lab_uri(), "net-start", net.name});
    ASSERT_TRUE(started && started->exit_code == 0) << (started ? started->err : "");

    // A guest with a NIC on it, backed up shut off (no boot needed for that).
    auto created = lab::LabGuest::create({}, current_test_name());
    ASSERT_TRUE(created) << created.error().message();
    guests.push_back(std::move(*created));
    lab::LabGuest& g = guests.back();
    auto attached = lab::run_process({"virsh", "-c", lab::lab_uri(), "attach-interface", g.name(),
                                      "network", net.name, "--model", "virtio", "--config"});
    ASSERT_TRUE(attached && attached->exit_code == 0) << (attached ? attached->err : "");
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];

    net.remove();
    auto gone = lab::run_process({"virsh", "-c", lab::lab_uri(), "net-info", net.name});
    ASSERT_TRUE(gone && gone->exit_code != 0) << "the network is gone";

    RestoredVm copy{g.name().substr(0, 40) + "-nic", dir / "nic"};
    auto out = run(
        {"restore", point, "--as", copy.name, "--to", copy.folder.string(), "--start", "--json"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    auto j = json::parse(out.out);
    std::string note;
    for (const auto& n : j["notes"])
        if (n.get<std::string>().find(net.name) != std::string::npos) note = n;
    EXPECT_NE(note.find("link down"), std::string::npos) << out.out;
    std::string xml = dumpxml(copy.name);
    auto nic = xml.find("<interface type='ethernet'>");
    ASSERT_NE(nic, std::string::npos) << xml;
    auto nic_end = xml.find("</interface>", nic);
    std::string interface = xml.substr(nic, nic_end - nic);
    EXPECT_NE(interface.find("<link state='down'/>"), std::string::npos) << interface;
    EXPECT_NE(interface.find("<model type='virtio'/>"), std::string::npos) << interface;
    EXPECT_EQ(xml.find(net.name), std::string::npos) << xml;
    EXPECT_TRUE(j["started"].get<bool>());
    ASSERT_TRUE(agent_answers(copy.name, 240s)) << "the restored VM boots";
}

// chattr +i on a file for as long as it lives: not even root can replace it.
struct Immutable {
    fs::path file;
    bool set() const {
        auto r = lab::run_process({"chattr", "+i", file.string()});
        return r && r->exit_code == 0;
    }
    void clear() const { (void)lab::run_process({"chattr", "-i", file.string()}); }
    ~Immutable() { clear(); }
};

TEST_F(VmBackupTest, FailedInPlaceRestoreLeavesTheOriginalDefinedAndBootableOrSaysHowToRetry) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo backed-up > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    ASSERT_TRUE(g.exec("echo later > /var/lib/lab/marker && sync"));

    // 1. A failure in the swap: the old disk cannot be replaced (immutable), found when it is
    // to be kept aside, before the old VM is stopped. Nothing was replaced: the old VM keeps
    // running on its own disk, the restored files are removed; the error says so and how to
    // retry — and the retry works.
    {
        Immutable immutable{g.disk_path("vda")};
        ASSERT_TRUE(immutable.set());
        auto failed = run({"restore", point, "--replace", "--start"});
        // link() of an immutable file: EPERM, a permission error in every layer (os_error.h).
        EXPECT_EQ(failed.exit_code, 11) << failed.out << failed.err;
        EXPECT_NE(failed.err.find("'" + g.name() + "'"), std::string::npos) << failed.err;
        EXPECT_NE(failed.err.find("failed before anything was replaced"), std::string::npos)
            << failed.err;
        EXPECT_NE(failed.err.find(g.disk_path("vda").string()), std::string::npos) << failed.err;
        EXPECT_NE(failed.err.find("run the restore again with --replace"), std::string::npos)
            << failed.err;
        EXPECT_TRUE(is_defined(g.name())) << "the old VM is still defined";
        auto running = g.domain().state();
        ASSERT_TRUE(running) << running.error().message();
        EXPECT_EQ(*running, virt::DomainState::running) << "and still running";
        EXPECT_TRUE(restore_leftovers(g.dir()).empty()) << "the restored files are removed";
    }
    ASSERT_TRUE(agent_answers(g.name(), 240s)) << "the old VM runs";
    auto kept = g.read_file("/var/lib/lab/marker");
    ASSERT_TRUE(kept) << kept.error().message();
    EXPECT_EQ(*kept, "later\n") << "on its own disk";
    auto retry = run({"restore", point, "--replace", "--start", "--json"});
    ASSERT_EQ(retry.exit_code, 0) << retry.out << retry.err;
    ASSERT_TRUE(agent_answers(g.name(), 240s));
    auto marker = g.read_file("/var/lib/lab/marker");
    ASSERT_TRUE(marker) << marker.error().message();
    EXPECT_EQ(*marker, "backed-up\n") << "the disk is the restore point's";
    EXPECT_TRUE(restore_leftovers(g.dir()).empty());
    ASSERT_TRUE(g.exec("echo running > /var/lib/lab/marker && sync"));

    // 2. A failure before PreRestore: a corrupted chunk. The error names the damage, the VM
    // is still defined and running on its own disk, no restored file is left.
    fs::path pack = corrupt_chunk(repo, point, "vda", 0);
    auto damaged = run({"restore", point, "--replace", "--start"});
    EXPECT_EQ(damaged.exit_code, 8) << damaged.out << damaged.err;
    EXPECT_NE(damaged.err.find(pack.filename().string()), std::string::npos) << damaged.err;
    EXPECT_NE(damaged.err.find("vda"), std::string::npos) << damaged.err;
    EXPECT_TRUE(is_defined(g.name()));
    auto state = g.domain().state();
    ASSERT_TRUE(state) << state.error().message();
    EXPECT_EQ(*state, virt::DomainState::running) << "it was running: it still is";
    EXPECT_TRUE(agent_answers(g.name(), 60s));
    auto still = g.read_file("/var/lib/lab/marker");
    ASSERT_TRUE(still) << still.error().message();
    EXPECT_EQ(*still, "running\n") << "its own disk, untouched";
    EXPECT_TRUE(restore_leftovers(g.dir()).empty());
    EXPECT_TRUE(scratch_leftovers().empty());
}

}  // namespace
}  // namespace vmshadow::testing
