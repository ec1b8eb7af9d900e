// SPDX-License-Identifier: MIT
// Initial replication seeded from a repository restore point: the replica host restores a
// real repository's point (made with the repository's own backup session) into the store's
// base images, then a resync cycle (the real CycleSender talking to ReplicaHost::handle())
// sends only the blocks that differ. Bad seeds (another VM's point, other disk sizes) are
// refused naming the reason, and nothing is left.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "replica/cycle_sender.h"
#include "replica/replica_host.h"
#include "replica/replica_protocol.h"
#include "replica/replica_store.h"
#include "unit/common/temp_dir.h"
#include "unit/repo/repo_test_util.h"

namespace vmshadow::replica {
namespace {

using nlohmann::json;

constexpr const char* kPrimary = "CN=hosta";
constexpr const char* kUuid = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab";
constexpr std::uint64_t kDiskBytes = 8u << 20;

repo::Bytes disk_content(unsigned seed) {
    repo::Bytes out(kDiskBytes);
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& b : out) {
        x = x * 1103515245u + 12345u;
        b = static_cast<std::uint8_t>(x >> 24);
    }
    return out;
}

// The replica protocol answered in process by ReplicaHost::handle() (the subject as the TLS
// layer would set it): the sender's calls go through the host's real routes.
class InProcessReplica final : public ReplicaClient {
  public:
    explicit InProcessReplica(ReplicaHost& host) : host_(host) {}
    net::HttpResponse call(const std::string& method, const std::string& tail, std::string body) {
        net::HttpRequest request;
        request.method = method;
        request.path = std::string(kPrefix) + "/vms/" + kUuid + tail;
        request.target = request.path;
        request.body = std::move(body);
        request.peer.address = "127.0.0.1:40000";
        request.peer.client_certificate_subject = kPrimary;
        return host_.handle(request);
    }
    Result<json> answer(const net::HttpResponse& r) {
        json body = json::parse(r.body, nullptr, false);
        if (r.status / 100 != 2) return fail(ErrorKind::conflict, r.body);
        return body;
    }

    const std::string& peer() const override { return peer_; }
    Result<json> hello() override { return json::object(); }
    Result<json> announce(const std::string&, const json& a) override {
        return answer(call("PUT", "", a.dump()));
    }
    Result<json> vm_state(const std::string&) override { return answer(call("GET", "", "")); }
    Result<CycleStart> begin_cycle(const std::string&, const json& begin) override {
        auto r = call("POST", "/cycles", begin.dump());
        json body = json::parse(r.body, nullptr, false);
        if (r.status == 409 && body.value("resync_required", false))
            return CycleStart{"", true, body.value("error", "")};
        if (r.status != 201) return fail(ErrorKind::conflict, r.body);
        return CycleStart{body["cycle"].get<std::string>(), false, ""};
    }
    Status put_chunk(const std::string&, const std::string& cycle, std::uint64_t seq,
                     std::string body) override {
        bytes_put += body.size();
        auto r =
            call("PUT", "/cycles/" + cycle + "/chunks/" + std::to_string(seq), std::move(body));
        if (r.status != 200) return fail(ErrorKind::conflict, r.body);
        return {};
    }
    Result<json> commit_cycle(const std::string&, const std::string& cycle,
                              const json& digest) override {
        return answer(call("POST", "/cycles/" + cycle + "/commit", digest.dump()));
    }
    Status abort_cycle(const std::string&, const std::string& cycle) override {
        call("DELETE", "/cycles/" + cycle, "");
        return {};
    }
    Result<std::vector<BlockHash>> hashes(const std::string&, const std::string& disk,
                                          std::uint64_t block_size, std::uint64_t first,
                                          std::uint64_t count) override {
        json ask = {{"disk", disk}, {"block_size", block_size}, {"first", first}, {"count", count}};
        auto r = call("POST", "/hashes", ask.dump());
        if (r.status != 200) return fail(ErrorKind::conflict, r.body);
        if (r.body.size() != count * 32) return fail(ErrorKind::io, "short hashes answer");
        std::vector<BlockHash> out(count);
        std::memcpy(out.data(), r.body.data(), r.body.size());
        return out;
    }
    Result<json> failover(const std::string&, const json&) override { return json::object(); }
    Result<json> reverse(const std::string&, const json&) override { return json::object(); }
    Result<json> remove(const std::string&) override { return json::object(); }

    std::uint64_t bytes_put = 0;

  private:
    ReplicaHost& host_;
    std::string peer_ = "in-process";
};

class ReplicaSeedTest : public ::testing::Test {
  protected:
    void SetUp() override {
        repo_path = dir.path / "repo";
        ASSERT_TRUE(repo::Repository::init(repo_path.string(), repo::InitOptions{}));
        auto opened = repo::test::open_plain(repo_path.string());
        ASSERT_TRUE(opened) << opened.error().message();
        auto point = repo::test::backup_bytes(**opened, "web1", {{"vda", seed_data}});
        ASSERT_TRUE(point) << point.error().message();
        point_id = point->id.hex();
        ReplicaHostOptions options;
        options.allow = {{kPrimary, dir.path / "storage"}};
        options.own_subject = "CN=hostb";
        options.connect_uri = "test:///default";
        auto host_opened = ReplicaHost::open(std::move(options));
        ASSERT_TRUE(host_opened) << host_opened.error().message();
        host = std::move(*host_opened);
        client = std::make_unique<InProcessReplica>(*host);
    }
    void TearDown() override {
        client.reset();
        host.reset();  // joins a seeding thread still running
    }

    json announcement(std::uint64_t size, const std::string& point) const {
        return {{"name", "web1"},
                {"uuid", kUuid},
                {"domain_xml", "<domain type='kvm'><name>web1</name></domain>"},
                {"disks", json::array({{{"target", "vda"}, {"size", size}}})},
                {"history", 4},
                {"primary_endpoint", "127.0.0.1:8471"},
                {"seed", {{"repository", repo_path.string()}, {"point", point}}}};
    }

    // The VM's state once the seed finished (bounded wait).
    json wait_seeded() {
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        json state;
        while (std::chrono::steady_clock::now() < until) {
            auto r = client->vm_state(kUuid);
            EXPECT_TRUE(r);
            if (!r) return nullptr;
            state = *r;
            if (state["state"] != "seeding") return state;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        ADD_FAILURE() << "still seeding after 60 s";
        return state;
    }

    // A resync cycle of `primary` (the whole disk read, as after a checkpoint was lost) over
    // the replica's latest point `latest`: only differing blocks are sent (2 of 128 here), and
    // the replica's new latest point equals `primary`.
    void resync_and_check(const repo::Bytes& primary, const std::string& latest) {
        CycleSender sender(*client, {kUuid, "", latest, 0}, nullptr, nullptr);
        engine::ChangeSet set;
        set.vm = "web1";
        set.uuid = kUuid;
        set.consistency = "crash";
        set.checkpoint = "vmshadow-01234567-20261207T083000.000Z";
        set.time = "2026-12-07T08:30:00Z";
        set.disks.push_back({"vda", kDiskBytes, false, ""});
        ASSERT_TRUE(sender.begin(set));
        auto bytes = std::as_bytes(std::span(primary));
        for (std::uint64_t off = 0; off < kDiskBytes; off += 1u << 20)
            ASSERT_TRUE(sender.data(0, off, bytes.subspan(off, 1u << 20)));
        auto committed = sender.commit();
        ASSERT_TRUE(committed) << committed.error().message();
        EXPECT_TRUE(sender.stats().resync);
        EXPECT_EQ(sender.stats().blocks_compared, kDiskBytes / kResyncBlockBytes);
        EXPECT_EQ(sender.stats().blocks_sent, 2u);
        EXPECT_LT(sender.stats().bytes_sent, kDiskBytes / 20);  // ≪ the disk
        auto got =
            client->hashes(kUuid, "vda", kResyncBlockBytes, 0, kDiskBytes / kResyncBlockBytes);
        ASSERT_TRUE(got) << got.error().message();
        for (std::uint64_t b = 0; b < kDiskBytes / kResyncBlockBytes; ++b) {
            BlockHash want{};
            unsigned int n = 0;
            EVP_Digest(primary.data() + b * kResyncBlockBytes, kResyncBlockBytes,
                       reinterpret_cast<unsigned char*>(want.data()), &n, EVP_sha256(), nullptr);
            ASSERT_EQ((*got)[b], want) << "block " << b;
        }
    }

    // The primary's disk after the backup: 2 of 128 blocks written since.
    repo::Bytes changed(const repo::Bytes& base) const {
        repo::Bytes primary = base;
        std::memset(primary.data() + 5 * kResyncBlockBytes + 100, 0xab, 1000);
        std::memset(primary.data() + 77 * kResyncBlockBytes, 0xcd, kResyncBlockBytes);
        return primary;
    }

    test::TempDir dir;
    std::filesystem::path repo_path;
    repo::Bytes seed_data = disk_content(1);
    std::string point_id;
    std::unique_ptr<ReplicaHost> host;
    std::unique_ptr<InProcessReplica> client;
};

TEST_F(ReplicaSeedTest, SeededStoreThenResyncSendsOnlyTheDifferingBlocks) {
    auto announced = client->announce(kUuid, announcement(kDiskBytes, "web1@latest"));
    ASSERT_TRUE(announced) << announced.error().message();
    json state = wait_seeded();
    ASSERT_TRUE(state["latest"].is_object()) << state.dump();
    EXPECT_EQ(state["latest"]["seq"], 0);
    EXPECT_EQ(state["latest"]["token"], "seed-" + point_id);

    repo::Bytes primary = changed(seed_data);
    resync_and_check(primary, state["latest"]["token"].get<std::string>());
}

TEST_F(ReplicaSeedTest, CycleIsAcceptedOnlyOnceTheSeedIsPointZero) {
    ASSERT_TRUE(client->announce(kUuid, announcement(kDiskBytes, "web1@latest")));
    // Right after the announcement the restore is running (qemu-img, qemu-nbd): a cycle is
    // refused saying so; one accepted means the seed was already point 0.
    json begin = {{"id", "c1"},
                  {"base_token", ""},
                  {"token", "vmshadow-01234567-20261207T083000.000Z"},
                  {"time", "2026-12-07T08:30:00Z"},
                  {"consistency", "crash"},
                  {"full", false},
                  {"disks", json::array({{{"target", "vda"}, {"size", kDiskBytes}}})}};
    auto r = client->call("POST", "/cycles", begin.dump());
    if (r.status == 409) {
        EXPECT_NE(
            r.body.find("seeding from restore point " + point_id.substr(0, 12) + ": retry later"),
            std::string::npos)
            << r.body;
        EXPECT_EQ(client
                      ->call("POST", "/hashes",
                             json{{"disk", "vda"},
                                  {"block_size", kResyncBlockBytes},
                                  {"first", 0},
                                  {"count", 1}}
                                 .dump())
                      .status,
                  409);
        EXPECT_EQ(host->list()["replicas"][0]["state"], "initial");
    } else {
        ASSERT_EQ(r.status, 201) << r.body;
        EXPECT_EQ((*client->vm_state(kUuid))["latest"]["seq"], 0);
        client->call("DELETE", "/cycles/c1", "");
    }
    EXPECT_TRUE(wait_seeded()["latest"].is_object());
}

TEST_F(ReplicaSeedTest, SeedCutOffByAStoppedDaemonIsDroppedAtTheNextStart) {
    host.reset();
    client.reset();
    auto folder = dir.path / "storage" / "web1-6f1c2d3e";
    {
        StoreIdentity identity{
            "web1", kUuid, kPrimary, "127.0.0.1:8471", "<domain/>", {{"vda", kDiskBytes}}, 4};
        auto store = ReplicaStore::create(folder, identity);
        ASSERT_TRUE(store) << store.error().message();
        ASSERT_TRUE((*store)->set_state("seeding"));
        std::ofstream(folder / "seed-vda.qcow2.vmshadow-partial") << "half";
    }
    ReplicaHostOptions options;
    options.allow = {{kPrimary, dir.path / "storage"}};
    options.connect_uri = "test:///default";
    auto reopened = ReplicaHost::open(std::move(options));
    ASSERT_TRUE(reopened) << reopened.error().message();
    host = std::move(*reopened);
    client = std::make_unique<InProcessReplica>(*host);
    auto state = client->vm_state(kUuid);
    ASSERT_TRUE(state) << state.error().message();
    EXPECT_EQ((*state)["state"], "replicating");
    EXPECT_TRUE((*state)["latest"].is_null());  // the primary's first cycle is a full copy
    EXPECT_FALSE(std::filesystem::exists(folder / "seed-vda.qcow2.vmshadow-partial"));
}

TEST_F(ReplicaSeedTest, PointOfAnotherVmIsRefusedAndNothingIsLeft) {
    auto opened = repo::test::open_plain(repo_path.string());
    ASSERT_TRUE(opened);
    ASSERT_TRUE(repo::test::backup_bytes(**opened, "db7", {{"vda", seed_data}}));
    auto announced = client->announce(kUuid, announcement(kDiskBytes, "db7@latest"));
    ASSERT_FALSE(announced);
    EXPECT_NE(announced.error().message().find("is not of VM web1"), std::string::npos)
        << announced.error().message();
    EXPECT_NE(announced.error().message().find("--initial network"), std::string::npos);
    EXPECT_TRUE(host->list()["replicas"].empty());
    EXPECT_FALSE(client->vm_state(kUuid));
}

TEST_F(ReplicaSeedTest, DiskSizeThatDiffersIsRefusedNamingIt) {
    auto announced = client->announce(kUuid, announcement(2 * kDiskBytes, "web1@latest"));
    ASSERT_FALSE(announced);
    EXPECT_NE(announced.error().message().find("disk vda is 8388608 bytes there"),
              std::string::npos)
        << announced.error().message();
}

TEST_F(ReplicaSeedTest, EncryptedRepositoryNotConfiguredHereIsRefusedSayingWhatToAdd) {
    auto secret = dir.path / "secret-repo";
    repo::InitOptions init;
    init.encrypt = true;
    init.password = "secret";
    init.kdf = repo::ScryptParams{1024, 8, 1};
    ASSERT_TRUE(repo::Repository::init(secret.string(), init));
    json a = announcement(kDiskBytes, "web1@latest");
    a["seed"]["repository"] = secret.string();
    auto announced = client->announce(kUuid, a);
    ASSERT_FALSE(announced);
    EXPECT_NE(announced.error().message().find("[repository.NAME]"), std::string::npos)
        << announced.error().message();
}

// Reverse after an unplanned failover: the old primary's disks were adopted as point 0 (raw
// images, by path), and its first cycle is a resync against them.
TEST_F(ReplicaSeedTest, ResyncOverAnAdoptedPointZeroSendsOnlyTheDifferingBlocks) {
    host.reset();
    client.reset();
    auto image = dir.path / "old-primary-vda.img";
    {
        std::ofstream out(image, std::ios::binary);
        out.write(reinterpret_cast<const char*>(seed_data.data()),
                  static_cast<std::streamsize>(seed_data.size()));
        ASSERT_TRUE(out.good());
    }
    StoreIdentity identity{
        "web1", kUuid, kPrimary, "127.0.0.1:8471", "<domain/>", {{"vda", kDiskBytes}}, 4};
    const std::string token = "vmshadow-89abcdef-20261207T080000.000Z";
    {
        auto adopted = ReplicaStore::adopt(dir.path / "storage" / "web1-6f1c2d3e", identity,
                                           {image}, token, "2026-12-07T08:00:00Z");
        ASSERT_TRUE(adopted) << adopted.error().message();
    }
    ReplicaHostOptions options;
    options.allow = {{kPrimary, dir.path / "storage"}};
    options.connect_uri = "test:///default";
    auto reopened = ReplicaHost::open(std::move(options));
    ASSERT_TRUE(reopened) << reopened.error().message();
    host = std::move(*reopened);
    client = std::make_unique<InProcessReplica>(*host);
    auto state = client->vm_state(kUuid);
    ASSERT_TRUE(state) << state.error().message();
    ASSERT_EQ((*state)["latest"]["token"], token);
    resync_and_check(changed(seed_data), token);
    // The old primary's image itself is only read: pruning merges into the store's layers.
    std::ifstream in(image, std::ios::binary);
    repo::Bytes back(kDiskBytes);
    in.read(reinterpret_cast<char*>(back.data()), static_cast<std::streamsize>(back.size()));
    EXPECT_EQ(back, seed_data);
}

TEST_F(ReplicaSeedTest, EncryptedRepositoryConfiguredHereSeedsWithItsPasswordFile) {
    host.reset();
    client.reset();
    auto secret = dir.path / "secret-repo";
    repo::InitOptions init;
    init.encrypt = true;
    init.password = "secret";  // open_plain's
    init.kdf = repo::ScryptParams{1024, 8, 1};
    ASSERT_TRUE(repo::Repository::init(secret.string(), init));
    {
        auto opened = repo::test::open_plain(secret.string());
        ASSERT_TRUE(opened) << opened.error().message();
        ASSERT_TRUE(repo::test::backup_bytes(**opened, "web1", {{"vda", seed_data}}));
    }
    const auto password_file = dir.path / "secret.pass";
    std::ofstream(password_file) << "secret\n";
    ReplicaHostOptions options;
    options.allow = {{kPrimary, dir.path / "storage"}};
    options.connect_uri = "test:///default";
    options.repository_password_file =
        [&](const std::filesystem::path& path) -> std::optional<std::filesystem::path> {
        if (path == secret) return password_file;
        return std::nullopt;
    };
    auto reopened = ReplicaHost::open(std::move(options));
    ASSERT_TRUE(reopened) << reopened.error().message();
    host = std::move(*reopened);
    client = std::make_unique<InProcessReplica>(*host);
    json a = announcement(kDiskBytes, "web1@latest");
    a["seed"]["repository"] = secret.string();
    auto announced = client->announce(kUuid, a);
    ASSERT_TRUE(announced) << announced.error().message();
    json state = wait_seeded();
    ASSERT_TRUE(state["latest"].is_object()) << state.dump();
    resync_and_check(changed(seed_data), state["latest"]["token"].get<std::string>());
}

}  // namespace
}  // namespace vmshadow::replica
