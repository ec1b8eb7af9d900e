// SPDX-License-Identifier: MIT
// ReplicaHost's protocol side, called directly with crafted requests (no TLS: the peer's
// certificate subject is set or left out as the TLS layer would), on real stores (qemu-img,
// qemu-nbd) in a temp dir. The failover paths that need libvirt's QEMU driver are covered by
// tests/integration/replica_host_test.cpp; test failover runs here on libvirt's test driver.
#include "replica/replica_host.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "replica/cycle_format.h"
#include "replica/replica_protocol.h"
#include "replica/replica_store.h"
#include "unit/common/temp_dir.h"
#include "virt/connection.h"
#include "virt/lifecycle.h"

namespace vmshadow::replica {
namespace {

using nlohmann::json;

constexpr const char* kPrimary = "CN=hosta";
constexpr const char* kOther = "CN=hostc";
constexpr const char* kUuid = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab";
constexpr std::uint64_t kDiskBytes = 4u << 20;
constexpr std::uint64_t kBlock = kResyncBlockBytes;

std::string vm_path(const std::string& tail = "") {
    return std::string(kPrefix) + "/vms/" + kUuid + tail;
}

json announcement(const std::string& name = "web1") {
    return {{"name", name},
            {"uuid", kUuid},
            {"domain_xml",
             "<domain type='kvm'><name>" + name + "</name><uuid>" + std::string(kUuid) +
                 "</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type "
                 "arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><driver "
                 "name='qemu' "
                 "type='qcow2'/><source file='/var/lib/libvirt/images/web1.qcow2'/><target "
                 "dev='vda' bus='virtio'/></disk><interface type='network'><mac "
                 "address='52:54:00:12:34:56'/><source network='default'/></interface>"
                 "</devices></domain>"},
            {"disks", json::array({{{"target", "vda"}, {"size", kDiskBytes}}})},
            {"history", 4},
            {"primary_endpoint", "127.0.0.1:8471"}};
}

std::string token(int n) {
    return "vmshadow-aaaaaaaa-20261207T00000" + std::to_string(n) + ".000Z";
}
std::string at(int n) {
    return "2026-12-07T00:00:0" + std::to_string(n) + "Z";
}

json begin(const std::string& id, bool full, const std::string& base, int n) {
    return {{"id", id},
            {"base_token", base},
            {"token", token(n)},
            {"time", at(n)},
            {"consistency", "crash"},
            {"full", full},
            {"disks", json::array({{{"target", "vda"}, {"size", kDiskBytes}}})}};
}

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
    std::vector<std::byte> out(size);
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& b : out) {
        x = x * 1103515245u + 12345u;
        b = static_cast<std::byte>(x >> 24);
    }
    return out;
}

// A cycle's chunks as the primary sends them, and its commit body.
struct Cycle {
    std::vector<std::string> chunks;
    std::uint64_t frames = 0;
    json commit() const {
        CycleDigest digest;
        for (const auto& c : chunks) digest.add(c);
        return {{"chunks", chunks.size()}, {"frames", frames}, {"sha256", digest.hex()}};
    }
};

class ReplicaHostTest : public ::testing::Test {
  protected:
    void SetUp() override { open_host(); }
    void TearDown() override { host.reset(); }

    void open_host() {
        ReplicaHostOptions options;
        options.allow = {{kPrimary, dir.path / "storage"}, {kOther, dir.path / "other"}};
        options.own_subject = "CN=hostb";
        options.connect_uri = "test:///default";
        auto opened = ReplicaHost::open(std::move(options));
        ASSERT_TRUE(opened) << opened.error().message();
        host = std::move(*opened);
    }

    net::HttpResponse call(const std::string& method, const std::string& path, std::string body,
                           std::optional<std::string> subject = std::string(kPrimary)) {
        net::HttpRequest request;
        request.method = method;
        request.path = path;
        request.target = path;
        request.body = std::move(body);
        request.peer.address = "127.0.0.1:40000";
        request.peer.client_certificate_subject = std::move(subject);
        return host->handle(request);
    }
    static json body_of(const net::HttpResponse& r) { return json::parse(r.body, nullptr, false); }

    void announce() {
        auto r = call("PUT", vm_path(), announcement().dump());
        ASSERT_EQ(r.status, 200) << r.body;
    }

    // Writes `data` at `offset` into the expected image and into the cycle.
    void add_write(ChunkEncoder& encoder, std::uint64_t offset,
                   const std::vector<std::byte>& data) {
        ASSERT_TRUE(encoder.add_data(0, offset, data));
        std::memcpy(image.data() + offset, data.data(), data.size());
    }
    void add_zero(ChunkEncoder& encoder, std::uint64_t offset, std::uint32_t length) {
        ASSERT_TRUE(encoder.add_zero(0, offset, length));
        std::memset(image.data() + offset, 0, length);
    }

    // Sends the cycle's chunks in order; each must be accepted.
    void send_chunks(const std::string& id, const Cycle& cycle) {
        for (std::size_t seq = 0; seq < cycle.chunks.size(); ++seq) {
            auto r = call("PUT", vm_path("/cycles/" + id + "/chunks/" + std::to_string(seq)),
                          cycle.chunks[seq]);
            ASSERT_EQ(r.status, 200) << r.body;
        }
    }

    // A full cycle writing two extents and a zero extent; point 0.
    Cycle full_cycle() {
        ChunkEncoder encoder;
        Cycle cycle;
        add_write(encoder, 0, pattern(256u << 10, 1));
        add_write(encoder, 1u << 20, pattern(1u << 20, 2));
        cycle.chunks.push_back(encoder.take());
        add_zero(encoder, 1u << 20, 64u << 10);
        add_write(encoder, kDiskBytes - (64u << 10), pattern(64u << 10, 3));
        cycle.chunks.push_back(encoder.take());
        cycle.frames = 4;
        return cycle;
    }

    void run_full_cycle() {
        auto r = call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump());
        ASSERT_EQ(r.status, 201) << r.body;
        Cycle cycle = full_cycle();
        send_chunks("c0", cycle);
        r = call("POST", vm_path("/cycles/c0/commit"), cycle.commit().dump());
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(body_of(r)["point"]["seq"], 0);
    }

    // The replica's block hashes of the latest point equal those of `image`.
    void expect_latest_is_image() {
        json ask = {
            {"disk", "vda"}, {"block_size", kBlock}, {"first", 0}, {"count", kDiskBytes / kBlock}};
        auto r = call("POST", vm_path("/hashes"), ask.dump());
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(r.content_type, "application/octet-stream");
        ASSERT_EQ(r.body.size(), kDiskBytes / kBlock * 32);
        for (std::uint64_t b = 0; b < kDiskBytes / kBlock; ++b) {
            std::array<unsigned char, 32> want{};
            SHA256(reinterpret_cast<const unsigned char*>(image.data() + b * kBlock), kBlock,
                   want.data());
            ASSERT_EQ(std::memcmp(r.body.data() + b * 32, want.data(), 32), 0) << "block " << b;
        }
    }

    json vm_state() {
        auto r = call("GET", vm_path(), "");
        EXPECT_EQ(r.status, 200) << r.body;
        return body_of(r);
    }

    test::TempDir dir;
    std::unique_ptr<ReplicaHost> host;
    std::vector<std::byte> image = std::vector<std::byte>(kDiskBytes);
};

TEST_F(ReplicaHostTest, MissingClientCertificateIs401) {
    auto r = call("GET", std::string(kPrefix) + "/hello", "", std::nullopt);
    EXPECT_EQ(r.status, 401) << r.body;
}

TEST_F(ReplicaHostTest, UnknownSubjectIs403NamingItBeforeTheBodyIsParsed) {
    auto r = call("PUT", vm_path(), "{not json at all", std::string("CN=mallory"));
    EXPECT_EQ(r.status, 403) << r.body;
    EXPECT_NE(body_of(r)["error"].get<std::string>().find("CN=mallory"), std::string::npos);
}

TEST_F(ReplicaHostTest, HelloNamesBothSubjects) {
    auto r = call("GET", std::string(kPrefix) + "/hello", "");
    ASSERT_EQ(r.status, 200) << r.body;
    auto j = body_of(r);
    EXPECT_EQ(j["version"], kProtocolVersion);
    EXPECT_EQ(j["subject"], "CN=hostb");
    EXPECT_EQ(j["peer"], kPrimary);
}

TEST_F(ReplicaHostTest, FullThenIncrementalCycleMakesPointsWithTheRightData) {
    announce();
    EXPECT_TRUE(vm_state()["latest"].is_null());
    run_full_cycle();
    expect_latest_is_image();

    auto r = call("POST", vm_path("/cycles"), begin("c1", false, token(0), 1).dump());
    ASSERT_EQ(r.status, 201) << r.body;
    ChunkEncoder encoder;
    Cycle cycle;
    add_write(encoder, 64u << 10, pattern(128u << 10, 4));
    add_zero(encoder, 0, 64u << 10);
    cycle.chunks.push_back(encoder.take());
    cycle.frames = 2;
    send_chunks("c1", cycle);
    r = call("POST", vm_path("/cycles/c1/commit"), cycle.commit().dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(body_of(r)["point"]["seq"], 1);
    EXPECT_EQ(body_of(r)["point"]["token"], token(1));
    expect_latest_is_image();

    auto state = vm_state();
    ASSERT_EQ(state["points"].size(), 2u);
    EXPECT_EQ(state["latest"]["seq"], 1);
    auto points = host->points("web1");
    ASSERT_TRUE(points) << points.error().message();
    EXPECT_EQ((*points)["points"].size(), 2u);
    auto list = host->list()["replicas"];
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0]["vm"], "web1");
    EXPECT_EQ(list[0]["role"], "replica");
    EXPECT_EQ(list[0]["peer"], kPrimary);
    EXPECT_EQ(list[0]["points"], 2);
    EXPECT_EQ(list[0]["last_cycle"], at(1));
    EXPECT_TRUE(list[0]["rpo_s"].is_number());
}

TEST_F(ReplicaHostTest, StoresAreFoundAgainWhenTheHostReopens) {
    announce();
    run_full_cycle();
    host.reset();
    open_host();
    EXPECT_EQ(vm_state()["points"].size(), 1u);
    expect_latest_is_image();
}

TEST_F(ReplicaHostTest, OutOfOrderChunkIs409AndAbortsTheCycle) {
    announce();
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump()).status, 201);
    Cycle cycle = full_cycle();
    auto r = call("PUT", vm_path("/cycles/c0/chunks/1"), cycle.chunks[1]);
    EXPECT_EQ(r.status, 409) << r.body;
    r = call("PUT", vm_path("/cycles/c0/chunks/0"), cycle.chunks[0]);
    EXPECT_EQ(r.status, 409) << "the cycle was aborted: " << r.body;
    EXPECT_TRUE(vm_state()["points"].empty());
}

TEST_F(ReplicaHostTest, BadDigestAtCommitIs400AndNoPointIsMade) {
    announce();
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump()).status, 201);
    Cycle cycle = full_cycle();
    send_chunks("c0", cycle);
    json commit = cycle.commit();
    commit["sha256"] = std::string(64, '0');
    auto r = call("POST", vm_path("/cycles/c0/commit"), commit.dump());
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_TRUE(vm_state()["points"].empty());
    r = call("POST", vm_path("/cycles/c0/commit"), cycle.commit().dump());
    EXPECT_EQ(r.status, 409) << "an aborted cycle cannot be committed: " << r.body;
    EXPECT_TRUE(vm_state()["points"].empty());
}

TEST_F(ReplicaHostTest, WrongChunkOrFrameCountAtCommitIs400) {
    announce();
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump()).status, 201);
    Cycle cycle = full_cycle();
    send_chunks("c0", cycle);
    json commit = cycle.commit();
    commit["frames"] = 3;
    EXPECT_EQ(call("POST", vm_path("/cycles/c0/commit"), commit.dump()).status, 400);
    EXPECT_TRUE(vm_state()["points"].empty());
}

TEST_F(ReplicaHostTest, CorruptChunkIs400AndAbortsTheCycle) {
    announce();
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump()).status, 201);
    Cycle cycle = full_cycle();
    std::string bad = cycle.chunks[0];
    bad[bad.size() / 2] ^= 0x5a;
    auto r = call("PUT", vm_path("/cycles/c0/chunks/0"), bad);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(call("PUT", vm_path("/cycles/c0/chunks/0"), cycle.chunks[0]).status, 409);
}

TEST_F(ReplicaHostTest, NewBeginSupersedesAStaleCycle) {
    announce();
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("dead", true, "", 0).dump()).status, 201);
    Cycle stale = full_cycle();
    ASSERT_EQ(call("PUT", vm_path("/cycles/dead/chunks/0"), stale.chunks[0]).status, 200);

    image.assign(kDiskBytes, std::byte{0});
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump()).status, 201);
    auto r = call("PUT", vm_path("/cycles/dead/chunks/1"), stale.chunks[1]);
    EXPECT_EQ(r.status, 409) << "the stale cycle is gone: " << r.body;
    Cycle cycle = full_cycle();
    send_chunks("c0", cycle);
    ASSERT_EQ(call("POST", vm_path("/cycles/c0/commit"), cycle.commit().dump()).status, 200);
    expect_latest_is_image();
}

TEST_F(ReplicaHostTest, BaseTokenNotHeldIs409ResyncRequired) {
    announce();
    run_full_cycle();
    auto r = call("POST", vm_path("/cycles"), begin("c1", false, token(7), 1).dump());
    EXPECT_EQ(r.status, 409) << r.body;
    EXPECT_EQ(body_of(r)["resync_required"], true);
}

TEST_F(ReplicaHostTest, AbortRouteDropsTheCycle) {
    announce();
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump()).status, 201);
    auto r = call("DELETE", vm_path("/cycles/c0"), "");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(body_of(r)["aborted"], true);
    EXPECT_EQ(call("PUT", vm_path("/cycles/c0/chunks/0"), full_cycle().chunks[0]).status, 409);
}

TEST_F(ReplicaHostTest, HostileInputIs400) {
    announce();
    // JSON: oversized, malformed, wrong types, a uuid that is not the path's.
    EXPECT_EQ(call("PUT", vm_path(), std::string(kMaxJsonBody + 1, ' ')).status, 400);
    EXPECT_EQ(call("PUT", vm_path(), "{\"name\": ").status, 400);
    EXPECT_EQ(call("PUT", vm_path(), "[1,2]").status, 400);
    json a = announcement();
    a["disks"][0]["size"] = "big";
    EXPECT_EQ(call("PUT", vm_path(), a.dump()).status, 400);
    a = announcement();
    a["history"] = 25;
    EXPECT_EQ(call("PUT", vm_path(), a.dump()).status, 400);
    a = announcement();
    a["name"] = "../../etc";
    EXPECT_EQ(call("PUT", vm_path(), a.dump()).status, 400);
    a = announcement();
    a["uuid"] = "00000000-0000-4000-8000-000000000000";
    EXPECT_EQ(call("PUT", vm_path(), a.dump()).status, 400);
    std::string deep(100, '[');
    EXPECT_EQ(call("POST", vm_path("/cycles"), "{\"id\":" + deep).status, 400);
    json b = begin("c0", true, "", 0);
    b["consistency"] = 3;
    EXPECT_EQ(call("POST", vm_path("/cycles"), b.dump()).status, 400);
    b = begin("c0", false, "", 0);
    EXPECT_EQ(call("POST", vm_path("/cycles"), b.dump()).status, 409)
        << "a resync needs a point to compare with";
    b = begin("c0", true, "", 0);
    b["time"] = "yesterday";
    EXPECT_EQ(call("POST", vm_path("/cycles"), b.dump()).status, 400);
    // Path segments: uuid, cycle id, seq.
    EXPECT_EQ(call("GET", std::string(kPrefix) + "/vms/NOT-A-UUID", "").status, 400);
    EXPECT_EQ(call("PUT", vm_path("/cycles/xyz/chunks/0"), "").status, 400);
    EXPECT_EQ(call("PUT", vm_path("/cycles/" + std::string(65, 'a') + "/chunks/0"), "").status,
              400);
    EXPECT_EQ(call("PUT", vm_path("/cycles/c0/chunks/10000001"), "").status, 400);
    EXPECT_EQ(call("PUT", vm_path("/cycles/c0/chunks/-1"), "").status, 400);
    EXPECT_EQ(call("GET", std::string(kPrefix) + "/nothing", "").status, 404);
    EXPECT_EQ(call("POST", std::string(kPrefix) + "/hello", "").status, 405);
    // Hashes: block size not a power of two, too many.
    json h = {{"disk", "vda"}, {"block_size", 100000}, {"first", 0}, {"count", 1}};
    EXPECT_EQ(call("POST", vm_path("/hashes"), h.dump()).status, 400);
    h = {
        {"disk", "vda"}, {"block_size", kBlock}, {"first", 0}, {"count", kMaxHashesPerRequest + 1}};
    EXPECT_EQ(call("POST", vm_path("/hashes"), h.dump()).status, 400);
    h = {{"disk", "vdz"}, {"block_size", kBlock}, {"first", 0}, {"count", 1}};
    EXPECT_EQ(call("POST", vm_path("/hashes"), h.dump()).status, 400);
    // A cycle whose disks differ from the store's.
    b = begin("c0", true, "", 0);
    b["disks"][0]["size"] = kDiskBytes * 2;
    EXPECT_EQ(call("POST", vm_path("/cycles"), b.dump()).status, 409);
}

TEST_F(ReplicaHostTest, UnknownVmIs404AndBadFailoverOrReverseRequestsAre400) {
    EXPECT_EQ(call("GET", vm_path(), "").status, 404);
    EXPECT_EQ(call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump()).status, 404);
    announce();
    EXPECT_EQ(call("POST", vm_path("/failover"), R"({"planned": false})").status, 400);
    EXPECT_EQ(call("POST", vm_path("/failover"), R"({"planned": "yes"})").status, 400);
    EXPECT_EQ(call("POST", vm_path("/failover"), R"({"planned": true})").status, 409)
        << "no point to fail over to yet";
    json offer = announcement();
    offer["token"] = token(0);
    offer["time"] = at(0);
    offer["uuid"] = "00000000-0000-4000-8000-000000000000";
    EXPECT_EQ(call("POST", vm_path("/reverse"), offer.dump()).status, 400);
    offer = announcement();
    offer["time"] = at(0);
    EXPECT_EQ(call("POST", vm_path("/reverse"), offer.dump()).status, 400) << "no token";
}

TEST_F(ReplicaHostTest, CyclesOfTwoVmsRunInParallel) {
    const std::string uuids[2] = {kUuid, "7a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d"};
    for (int i = 0; i < 2; ++i) {
        json a = announcement("vm" + std::to_string(i));
        a["uuid"] = uuids[i];
        auto r = call("PUT", std::string(kPrefix) + "/vms/" + uuids[i], a.dump());
        ASSERT_EQ(r.status, 200) << r.body;
    }
    std::string failures[2];
    auto run = [&](int i) {
        const std::string base = std::string(kPrefix) + "/vms/" + uuids[i];
        for (int n = 0; n < 3; ++n) {
            std::string id = "c" + std::to_string(n);
            json b = n == 0 ? begin(id, true, "", n) : begin(id, false, token(n - 1), n);
            ChunkEncoder encoder;
            (void)encoder.add_data(0, (n + 1) * kBlock, pattern(kBlock, i * 10 + n));
            Cycle cycle;
            cycle.chunks.push_back(encoder.take());
            cycle.frames = 1;
            int statuses[3] = {
                call("POST", base + "/cycles", b.dump()).status,
                call("PUT", base + "/cycles/" + id + "/chunks/0", cycle.chunks[0]).status,
                call("POST", base + "/cycles/" + id + "/commit", cycle.commit().dump()).status};
            if (statuses[0] != 201 || statuses[1] != 200 || statuses[2] != 200)
                failures[i] += "cycle " + id + ": " + std::to_string(statuses[0]) + " " +
                               std::to_string(statuses[1]) + " " + std::to_string(statuses[2]) +
                               "; ";
        }
    };
    std::thread other(run, 1);
    run(0);
    other.join();
    EXPECT_EQ(failures[0], "");
    EXPECT_EQ(failures[1], "");
    auto list = host->list()["replicas"];
    ASSERT_EQ(list.size(), 2u);
    for (const auto& vm : list) EXPECT_EQ(vm["points"], 3) << vm.dump();
}

TEST_F(ReplicaHostTest, AStoreBelongsToTheSubjectThatCreatedIt) {
    announce();
    auto r = call("GET", vm_path(), "", std::string(kOther));
    EXPECT_EQ(r.status, 409) << r.body;
    r = call("POST", vm_path("/cycles"), begin("c0", true, "", 0).dump(), std::string(kOther));
    EXPECT_EQ(r.status, 409) << r.body;
    r = call("PUT", vm_path(), announcement().dump(), std::string(kOther));
    EXPECT_EQ(r.status, 409) << r.body;
}

TEST_F(ReplicaHostTest, FailedOverStoreRefusesCycles) {
    announce();
    run_full_cycle();
    host.reset();
    {
        auto store =
            ReplicaStore::open(dir.path / "storage" / ("web1-" + std::string(kUuid).substr(0, 8)));
        ASSERT_TRUE(store) << store.error().message();
        ASSERT_TRUE((*store)->set_state("failed-over"));
    }
    open_host();
    auto r = call("POST", vm_path("/cycles"), begin("c1", false, token(0), 1).dump());
    EXPECT_EQ(r.status, 409) << r.body;
    EXPECT_EQ(call("PUT", vm_path(), announcement().dump()).status, 409);
    EXPECT_EQ(call("DELETE", vm_path(), "").status, 409);
    auto removed = host->remove("web1");
    EXPECT_FALSE(removed);
    EXPECT_EQ(host->list()["replicas"][0]["state"], "failed-over");
}

TEST_F(ReplicaHostTest, ChangedDisksTakeAFullCycle) {
    announce();
    run_full_cycle();
    json a = announcement();
    a["disks"][0]["size"] = kDiskBytes * 2;
    a["history"] = 2;
    auto r = call("PUT", vm_path(), a.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(body_of(r)["history"], 2);
    json b = begin("c1", false, token(0), 1);
    b["disks"] = a["disks"];
    r = call("POST", vm_path("/cycles"), b.dump());
    EXPECT_EQ(r.status, 409) << r.body;
    EXPECT_EQ(body_of(r)["resync_required"], true);
    b["full"] = true;
    EXPECT_EQ(call("POST", vm_path("/cycles"), b.dump()).status, 201);
}

TEST_F(ReplicaHostTest, DeleteRemovesTheStore) {
    announce();
    run_full_cycle();
    auto r = call("DELETE", vm_path(), "");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(call("GET", vm_path(), "").status, 404);
    EXPECT_TRUE(host->list()["replicas"].empty());
    EXPECT_FALSE(std::filesystem::exists(dir.path / "storage" /
                                         ("web1-" + std::string(kUuid).substr(0, 8))));
}

TEST_F(ReplicaHostTest, ImportInitialAppliesTheExportedFolder) {
    auto folder = dir.path / "media";
    std::filesystem::create_directories(folder);
    Cycle cycle = full_cycle();
    json file = {{"vm", announcement()},
                 {"begin", begin("c0", true, "", 0)},
                 {"commit", cycle.commit()},
                 {"primary_subject", kPrimary}};
    auto write = [](const std::filesystem::path& p, const std::string& s) {
        std::ofstream out(p, std::ios::binary);
        out << s;
    };
    write(folder / "cycle.json", file.dump());
    for (std::size_t i = 0; i < cycle.chunks.size(); ++i)
        write(folder / ("chunk-" + std::to_string(i) + ".bin"), cycle.chunks[i]);
    auto done = host->import_initial(folder, nullptr);
    ASSERT_TRUE(done) << done.error().message();
    EXPECT_EQ((*done)["point"]["seq"], 0);
    expect_latest_is_image();
}

TEST_F(ReplicaHostTest, ImportInitialRefusesAFolderCutOffOrWithAMissingChunk) {
    auto folder = dir.path / "media";
    std::filesystem::create_directories(folder);
    auto done = host->import_initial(folder, nullptr);
    ASSERT_FALSE(done);
    EXPECT_EQ(done.error().kind(), ErrorKind::not_found);
    Cycle cycle = full_cycle();
    json file = {{"vm", announcement()},
                 {"begin", begin("c0", true, "", 0)},
                 {"commit", cycle.commit()},
                 {"primary_subject", kPrimary}};
    std::ofstream(folder / "cycle.json") << file.dump();
    std::ofstream(folder / "chunk-0.bin", std::ios::binary) << cycle.chunks[0];
    done = host->import_initial(folder, nullptr);
    ASSERT_FALSE(done);
    EXPECT_NE(done.error().message().find("chunk-1.bin"), std::string::npos)
        << done.error().message();
    EXPECT_TRUE(vm_state()["points"].empty());
}

TEST_F(ReplicaHostTest, ImportInitialRefusesASubjectNotAllowed) {
    auto folder = dir.path / "media";
    std::filesystem::create_directories(folder);
    Cycle cycle = full_cycle();
    json file = {{"vm", announcement()},
                 {"begin", begin("c0", true, "", 0)},
                 {"commit", cycle.commit()},
                 {"primary_subject", "CN=mallory"}};
    std::ofstream(folder / "cycle.json") << file.dump();
    auto done = host->import_initial(folder, nullptr);
    ASSERT_FALSE(done);
    EXPECT_EQ(done.error().kind(), ErrorKind::permission);
}

TEST_F(ReplicaHostTest, TestFailoverDefinesAnIsolatedCopyWhileReplicationContinues) {
    // libvirt's test driver keeps its VMs while one connection is open. It cannot undefine
    // with checkpoint metadata, so stop_test is tested on QEMU (tests/integration).
    auto keep = virt::Connection::open("test:///default");
    ASSERT_TRUE(keep) << keep.error().message();
    announce();
    run_full_cycle();
    auto started = host->test_failover("web1", std::nullopt, nullptr);
    ASSERT_TRUE(started) << started.error().message();
    EXPECT_EQ((*started)["test_vm"], "web1-test");
    auto domain = keep->lookup("web1-test");
    ASSERT_TRUE(domain) << domain.error().message();
    struct Undefine {
        virt::Domain& d;
        ~Undefine() {
            (void)virt::destroy_domain(d);
            virDomainUndefine(d.raw());
        }
    } undefine{*domain};
    auto xml = domain->xml(virt::XmlFlavor::inactive);
    ASSERT_TRUE(xml);
    EXPECT_NE(xml->find("state='down'"), std::string::npos) << *xml;
    EXPECT_EQ(xml->find("52:54:00:12:34:56"), std::string::npos) << *xml;
    EXPECT_EQ(xml->find(kUuid), std::string::npos) << *xml;
    EXPECT_NE(xml->find("test-vda.qcow2"), std::string::npos) << *xml;
    EXPECT_EQ(host->list()["replicas"][0]["state"], "test-failover");

    // Replication continues meanwhile; a second test and a removal are refused.
    EXPECT_FALSE(host->test_failover("web1", std::nullopt, nullptr));
    EXPECT_FALSE(host->remove("web1"));
    ASSERT_EQ(call("POST", vm_path("/cycles"), begin("c1", false, token(0), 1).dump()).status, 201);
    Cycle empty;
    auto r = call("POST", vm_path("/cycles/c1/commit"), empty.commit().dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(vm_state()["points"].size(), 2u);
}

}  // namespace
}  // namespace vmshadow::replica
