// SPDX-License-Identifier: MIT
// ReplicaHost's failover operations on qemu:///system, without a second host or a guest OS:
// a store made through the protocol (one full cycle into a small blank disk), then test
// failover / stop-test / failover / commit of a tiny TCG domain that never boots anything,
// and the reverse offer accepted for a shut-off VM. Everything made is removed, also when a
// check fails: the domains by name, the storage folder with the fixture.
#include "replica/replica_host.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>

#include "lab/lab_guest.h"
#include "replica/cycle_format.h"
#include "replica/replica_protocol.h"
#include "replica/replica_store.h"
#include "virt/checkpoints.h"
#include "virt/connection.h"
#include "virt/lifecycle.h"

namespace vmshadow::replica {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kPrimary = "CN=replica-host-test-primary";
constexpr std::uint64_t kDiskBytes = 16u << 20;

std::string random_digits(int n) {
    std::random_device rd;
    std::string out;
    for (int i = 0; i < n; ++i) out += static_cast<char>('a' + rd() % 26);
    return out;
}

std::string random_uuid_text() {
    std::random_device rd;
    char buf[40];
    std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-8%03x-%08x%04x", rd(), rd() & 0xffff,
                  rd() & 0xfff, rd() & 0xfff, rd(), rd() & 0xffff);
    return buf;
}

// A domain that QEMU can run under TCG with no OS: it sits in the firmware.
std::string tiny_domain(const std::string& name, const std::string& uuid, const fs::path& disk) {
    return "<domain type='qemu'><name>" + name + "</name><uuid>" + uuid +
           "</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64' "
           "machine='pc'>hvm</type><boot dev='hd'/></os><devices><disk type='file' "
           "device='disk'><driver name='qemu' type='qcow2'/><source file='" +
           disk.string() +
           "'/><target dev='vda' bus='virtio'/></disk><interface type='user'><mac "
           "address='52:54:00:5e:17:01'/><model type='virtio'/></interface><serial "
           "type='pty'/></devices></domain>";
}

void remove_domain(const virt::Connection& conn, const std::string& name) {
    if (auto d = conn.lookup(name)) {
        (void)virt::destroy_domain(*d);
        (void)virt::undefine_domain(*d);
    }
}

class ReplicaHostFailoverTest : public ::testing::Test {
  protected:
    void SetUp() override {
        name = "vmshadow-test-replhost-" + std::to_string(getpid()) + "-" + random_digits(6);
        uuid = random_uuid_text();
        dir = lab::run_dir() / name;
        fs::create_directories(dir / "storage");
        fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                 fs::perms::others_read | fs::perms::others_exec);
        auto c = virt::Connection::open(lab::lab_uri());
        ASSERT_TRUE(c) << c.error().message();
        conn.emplace(std::move(*c));
        open_host();
    }
    void open_host() {
        ReplicaHostOptions options;
        options.allow = {{kPrimary, dir / "storage"}};
        options.connect_uri = lab::lab_uri();
        options.release_primary = [this](const std::string& released) -> Status {
            released_uuid = released;
            return {};
        };
        auto opened = ReplicaHost::open(std::move(options));
        ASSERT_TRUE(opened) << opened.error().message();
        host = std::move(*opened);
    }
    void TearDown() override {
        if (conn) {
            remove_domain(*conn, name + "-test");
            remove_domain(*conn, name);
            remove_domain(*conn, name + "-old");
        }
        host.reset();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    net::HttpResponse call(const std::string& method, const std::string& tail, std::string body) {
        net::HttpRequest r;
        r.method = method;
        r.path = std::string(kPrefix) + tail;
        r.target = r.path;
        r.body = std::move(body);
        r.peer.client_certificate_subject = kPrimary;
        return host->handle(r);
    }

    json disks() const { return json::array({{{"target", "vda"}, {"size", kDiskBytes}}}); }

    // Announce + one full cycle writing a marker: point 0.
    void replicate() {
        json a = {{"name", name},
                  {"uuid", uuid},
                  {"domain_xml", tiny_domain(name, uuid, "/nonexistent/primary.qcow2")},
                  {"disks", disks()},
                  {"history", 2},
                  {"primary_endpoint", "127.0.0.1:1"}};
        auto r = call("PUT", "/vms/" + uuid, a.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        json begin = {{"id", "c0"},
                      {"token", "vmshadow-00000000-20261207T000000.000Z"},
                      {"time", "2026-12-07T00:00:00Z"},
                      {"consistency", "crash"},
                      {"full", true},
                      {"disks", disks()}};
        r = call("POST", "/vms/" + uuid + "/cycles", begin.dump());
        ASSERT_EQ(r.status, 201) << r.body;
        ChunkEncoder encoder;
        std::vector<std::byte> marker(64u << 10, std::byte{0x5a});
        ASSERT_TRUE(encoder.add_data(0, 1u << 20, marker));
        std::string chunk = encoder.take();
        r = call("PUT", "/vms/" + uuid + "/cycles/c0/chunks/0", chunk);
        ASSERT_EQ(r.status, 200) << r.body;
        CycleDigest digest;
        digest.add(chunk);
        json commit = {{"chunks", 1}, {"frames", 1}, {"sha256", digest.hex()}};
        r = call("POST", "/vms/" + uuid + "/cycles/c0/commit", commit.dump());
        ASSERT_EQ(r.status, 200) << r.body;
    }

    std::string state() { return host->list()["replicas"][0]["state"].get<std::string>(); }

    std::string name, uuid, released_uuid;
    fs::path dir;
    std::optional<virt::Connection> conn;
    std::unique_ptr<ReplicaHost> host;
};

TEST_F(ReplicaHostFailoverTest, TestFailoverRunsAnIsolatedCopyAndStopTestRemovesOnlyIt) {
    replicate();
    auto started = host->test_failover(name, std::nullopt, nullptr);
    ASSERT_TRUE(started) << started.error().message();
    auto copy = conn->lookup(name + "-test");
    ASSERT_TRUE(copy) << copy.error().message();
    auto running = copy->state();
    ASSERT_TRUE(running);
    EXPECT_EQ(*running, virt::DomainState::running);
    auto xml = copy->xml(virt::XmlFlavor::live);
    ASSERT_TRUE(xml);
    EXPECT_NE(xml->find("<link state='down'/>"), std::string::npos);
    EXPECT_EQ(xml->find("52:54:00:5e:17:01"), std::string::npos);
    EXPECT_NE(copy->uuid(), uuid);
    EXPECT_EQ(state(), "test-failover");

    auto stopped = host->stop_test(name);
    ASSERT_TRUE(stopped) << stopped.error().message();
    EXPECT_FALSE(conn->lookup(name + "-test"));
    EXPECT_EQ(state(), "normal");
}

TEST_F(ReplicaHostFailoverTest, FailoverRunsTheVmWithAReverseCheckpointAndRefusesCycles) {
    replicate();
    auto done = host->failover(name, std::nullopt, nullptr);
    ASSERT_TRUE(done) << done.error().message();
    auto vm = conn->lookup(uuid);
    ASSERT_TRUE(vm) << vm.error().message();
    EXPECT_EQ(vm->name(), name);
    auto running = vm->state();
    ASSERT_TRUE(running);
    EXPECT_EQ(*running, virt::DomainState::running);
    auto checkpoints = virt::list_checkpoints(*vm);
    ASSERT_TRUE(checkpoints) << checkpoints.error().message();
    ASSERT_EQ(checkpoints->size(), 1u);
    EXPECT_EQ(checkpoints->front().name, (*done)["checkpoint"]);
    EXPECT_EQ(state(), "failed-over");

    json begin = {{"id", "c1"},
                  {"base_token", "vmshadow-00000000-20261207T000000.000Z"},
                  {"token", "vmshadow-00000000-20261207T000100.000Z"},
                  {"time", "2026-12-07T00:01:00Z"},
                  {"consistency", "crash"},
                  {"full", false},
                  {"disks", disks()}};
    EXPECT_EQ(call("POST", "/vms/" + uuid + "/cycles", begin.dump()).status, 409);
    EXPECT_FALSE(host->remove(name));

    auto source = host->reverse_source(name);
    ASSERT_TRUE(source) << source.error().message();
    EXPECT_EQ(source->token, checkpoints->front().name);
    EXPECT_EQ(source->chain_id.size(), 16u);
    EXPECT_EQ(source->peer_endpoint, "127.0.0.1:1");
    EXPECT_NE(source->checkpoint_xml.find("<domaincheckpoint"), std::string::npos);

    auto committed = host->commit(name);
    ASSERT_TRUE(committed) << committed.error().message();
    ASSERT_TRUE(host->mark_reversed(name));
    EXPECT_TRUE(host->list()["replicas"].empty());
}

TEST_F(ReplicaHostFailoverTest, FailoverCutOffHalfwayIsRedoneByTheNextOne) {
    replicate();
    // A daemon killed after the live overlays were made.
    host.reset();
    {
        auto store = ReplicaStore::open(dir / "storage" / (name + "-" + uuid.substr(0, 8)));
        ASSERT_TRUE(store) << store.error().message();
        ASSERT_TRUE((*store)->set_state("failing-over"));
        ASSERT_TRUE((*store)->make_overlays("live", 0));
    }
    open_host();
    json begin = {{"id", "c1"},
                  {"base_token", "vmshadow-00000000-20261207T000000.000Z"},
                  {"token", "vmshadow-00000000-20261207T000100.000Z"},
                  {"time", "2026-12-07T00:01:00Z"},
                  {"consistency", "crash"},
                  {"full", false},
                  {"disks", disks()}};
    EXPECT_EQ(call("POST", "/vms/" + uuid + "/cycles", begin.dump()).status, 409);
    EXPECT_FALSE(host->test_failover(name, std::nullopt, nullptr));
    auto done = host->failover(name, std::nullopt, nullptr);
    ASSERT_TRUE(done) << done.error().message();
    auto vm = conn->lookup(uuid);
    ASSERT_TRUE(vm) << vm.error().message();
    EXPECT_EQ(vm->state().value_or(virt::DomainState::nostate), virt::DomainState::running);
    EXPECT_EQ(state(), "failed-over");
}

TEST_F(ReplicaHostFailoverTest, ReverseOfferAdoptsTheShutOffVmsDisksAndUndefinesIt) {
    // This host was the primary of a VM now running elsewhere: shut off, its disk here.
    fs::path disk = dir / "old-vda.qcow2";
    std::string create =
        "qemu-img create -q -f qcow2 '" + disk.string() + "' " + std::to_string(kDiskBytes);
    ASSERT_EQ(std::system(create.c_str()), 0);
    auto defined = conn->define(tiny_domain(name + "-old", uuid, disk));
    ASSERT_TRUE(defined) << defined.error().message();
    json offer = {{"name", name + "-old"},
                  {"uuid", uuid},
                  {"domain_xml", tiny_domain(name + "-old", uuid, "/elsewhere/live-vda.qcow2")},
                  {"disks", disks()},
                  {"history", 2},
                  {"primary_endpoint", "127.0.0.1:2"},
                  {"token", "vmshadow-0123abcd-20261207T000000.000Z"},
                  {"time", "2026-12-07T00:00:00Z"}};
    auto r = call("POST", "/vms/" + uuid + "/reverse", offer.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(released_uuid, uuid);
    EXPECT_FALSE(conn->lookup(uuid)) << "the old primary's definition is gone";
    auto state = json::parse(r.body);
    ASSERT_EQ(state["points"].size(), 1u);
    EXPECT_EQ(state["latest"]["token"], "vmshadow-0123abcd-20261207T000000.000Z");
    EXPECT_TRUE(fs::exists(disk));
}

TEST_F(ReplicaHostFailoverTest, ReverseOfferForARunningVmIsRefused) {
    fs::path disk = dir / "old-vda.qcow2";
    std::string create =
        "qemu-img create -q -f qcow2 '" + disk.string() + "' " + std::to_string(kDiskBytes);
    ASSERT_EQ(std::system(create.c_str()), 0);
    auto defined = conn->define(tiny_domain(name + "-old", uuid, disk));
    ASSERT_TRUE(defined) << defined.error().message();
    ASSERT_TRUE(virt::start_domain(*defined));
    json offer = {{"name", name + "-old"},
                  {"uuid", uuid},
                  {"domain_xml", "<domain/>"},
                  {"disks", disks()},
                  {"history", 2},
                  {"token", "vmshadow-0123abcd-20261207T000000.000Z"},
                  {"time", "2026-12-07T00:00:00Z"}};
    auto r = call("POST", "/vms/" + uuid + "/reverse", offer.dump());
    EXPECT_EQ(r.status, 409) << r.body;
    EXPECT_TRUE(conn->lookup(uuid));
    EXPECT_TRUE(released_uuid.empty());
    EXPECT_TRUE(host->list()["replicas"].empty());
}

}  // namespace
}  // namespace vmshadow::replica
