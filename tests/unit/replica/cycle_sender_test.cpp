// SPDX-License-Identifier: MIT
#include "replica/cycle_sender.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
#include <random>

#include "replica/replica_protocol.h"

namespace vmshadow::replica {
namespace {

using json = nlohmann::json;

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::vector<std::byte> out(n);
    for (auto& b : out) b = static_cast<std::byte>(gen() & 0xff);
    return out;
}

BlockHash hash_of(std::span<const std::byte> bytes) {
    BlockHash out{};
    unsigned int size = 0;
    EVP_Digest(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(out.data()), &size,
               EVP_sha256(), nullptr);
    return out;
}

// A replica host in memory: applies the decoded frames to its disks, answers hashes of them.
class FakeReplica final : public ReplicaClient {
  public:
    std::vector<std::vector<std::byte>> disks;
    json begun;
    std::vector<std::string> chunks;
    json committed;
    bool answer_resync = false;
    bool fail_commit = false;
    bool aborted = false;
    std::uint64_t hash_requests = 0;
    std::uint64_t data_frames = 0, zero_frames = 0;

    const std::string& peer() const override { return peer_; }
    Result<json> hello() override { return json{{"version", 1}}; }
    Result<json> announce(const std::string&, const json&) override { return json::object(); }
    Result<json> vm_state(const std::string&) override { return json::object(); }
    Result<CycleStart> begin_cycle(const std::string&, const json& begin) override {
        begun = begin;
        if (answer_resync) return CycleStart{"", true, "resync required: latest is t0"};
        return CycleStart{"c1", false, ""};
    }
    Status put_chunk(const std::string&, const std::string& cycle, std::uint64_t seq,
                     std::string body) override {
        EXPECT_EQ(cycle, "c1");
        EXPECT_EQ(seq, chunks.size());  // in order, none twice
        EXPECT_LE(body.size(), kMaxChunkBytes);
        std::vector<DiskBounds> bounds;
        for (const auto& d : disks) bounds.push_back({d.size()});
        auto decoded = decode_chunk(body, bounds, [&](const Frame& f) -> Status {
            auto& disk = disks[f.disk];
            if (f.kind == Frame::Kind::zero) {
                ++zero_frames;
                std::memset(disk.data() + f.offset, 0, f.length);
            } else {
                ++data_frames;
                std::memcpy(disk.data() + f.offset, f.data.data(), f.length);
            }
            return {};
        });
        EXPECT_TRUE(decoded) << decoded.error().message();
        chunks.push_back(std::move(body));
        return {};
    }
    Result<json> commit_cycle(const std::string&, const std::string&, const json& digest) override {
        if (fail_commit) return fail(ErrorKind::unavailable, "connection cut");
        committed = digest;
        return json{{"point", {{"seq", 1}, {"token", begun["token"]}, {"time", begun["time"]}}}};
    }
    Status abort_cycle(const std::string&, const std::string&) override {
        aborted = true;
        return {};
    }
    Result<std::vector<BlockHash>> hashes(const std::string&, const std::string& disk,
                                          std::uint64_t block_size, std::uint64_t first,
                                          std::uint64_t count) override {
        ++hash_requests;
        EXPECT_EQ(block_size, kResyncBlockBytes);
        EXPECT_LE(count, kMaxHashesPerRequest);
        std::size_t index = disk == "vda" ? 0 : 1;
        const auto& d = disks.at(index);
        std::vector<BlockHash> out;
        for (std::uint64_t b = first; b < first + count; ++b) {
            std::uint64_t start = b * block_size;
            std::uint64_t len = std::min<std::uint64_t>(block_size, d.size() - start);
            out.push_back(hash_of(std::span(d).subspan(start, len)));
        }
        return out;
    }
    Result<json> failover(const std::string&, const json&) override { return json::object(); }
    Result<json> reverse(const std::string&, const json&) override { return json::object(); }
    Result<json> remove(const std::string&) override { return json::object(); }

  private:
    std::string peer_ = "fake:1";
};

engine::ChangeSet change_set(std::vector<std::pair<std::uint64_t, bool>> disks) {
    engine::ChangeSet set;
    set.vm = "web1";
    set.uuid = "6f1c2a4e-0b7d-4c1e-9a53-1f2e3d4c5b6a";
    set.consistency = "crash";
    set.checkpoint = "vmshadow-01234567-20261207T083000.000Z";
    set.time = "2026-12-07T08:30:00Z";
    const char* names[] = {"vda", "vdb"};
    for (std::size_t i = 0; i < disks.size(); ++i)
        set.disks.push_back({names[i], disks[i].first, disks[i].second, ""});
    return set;
}

SenderTime no_waits(std::chrono::nanoseconds* slept = nullptr) {
    SenderTime t;
    auto now = std::make_shared<Pacer::time_point>();
    t.now = [now] { return *now; };
    t.sleep = [now, slept](std::chrono::nanoseconds d) {
        *now += d;  // the fake clock moves by the wait
        if (slept) *slept += d;
    };
    return t;
}

TEST(CycleSender, FullCycleSendsChunksInOrderAndCommitsTheirDigest) {
    const std::size_t size = 40u << 20;
    auto disk = random_bytes(size, 1);
    std::memset(disk.data() + (14u << 20), 0, 4u << 20);  // one frame's worth of zeros
    FakeReplica replica;
    replica.disks = {std::vector<std::byte>(size, std::byte{0x55})};
    bool told = false;
    CycleSender sender(
        replica, {"uuid", "", "", 0},
        [&](const json& point, const engine::ChangeSet& set) -> Status {
            told = true;
            EXPECT_EQ(point["token"], set.checkpoint);
            EXPECT_FALSE(replica.committed.is_null());  // after the answer
            return {};
        },
        nullptr, no_waits());
    ASSERT_TRUE(sender.begin(change_set({{size, false}})));
    EXPECT_EQ(replica.begun["full"], true);
    EXPECT_EQ(replica.begun["base_token"], "");
    // The engine delivers extents of any length; frames are cut at 4 MiB.
    for (std::size_t at = 0; at < size; at += 10u << 20)
        ASSERT_TRUE(sender.data(0, at, std::span(disk).subspan(at, 10u << 20)));
    ASSERT_TRUE(sender.commit());
    EXPECT_TRUE(told);
    EXPECT_EQ(replica.disks[0], disk);
    EXPECT_GE(replica.chunks.size(), 2u);
    CycleDigest digest;
    for (const auto& c : replica.chunks) digest.add(c);
    EXPECT_EQ(replica.committed["sha256"], digest.hex());
    EXPECT_EQ(replica.committed["chunks"], replica.chunks.size());
    EXPECT_EQ(replica.committed["frames"], replica.data_frames + replica.zero_frames);
    EXPECT_GE(replica.zero_frames, 1u);  // the zero MiB travelled as a zero frame
    EXPECT_EQ(sender.stats().bytes_sent, [&] {
        std::uint64_t n = 0;
        for (const auto& c : replica.chunks) n += c.size();
        return n;
    }());
}

TEST(CycleSender, ResyncSendsOnlyTheBlocksThatDiffer) {
    const std::size_t size = 100 * kResyncBlockBytes + 1024;  // a short last block
    auto primary = random_bytes(size, 2);
    FakeReplica replica;
    replica.disks = {primary};
    auto& held = replica.disks[0];
    held[3 * kResyncBlockBytes + 17] ^= std::byte{1};  // block 3 differs
    held[size - 1] ^= std::byte{1};                    // the short last block differs
    // Block 50 is zero on the primary but not on the replica.
    std::memset(primary.data() + 50 * kResyncBlockBytes, 0, kResyncBlockBytes);
    CycleSender sender(replica, {"uuid", "", "token-latest", 0}, nullptr, nullptr, no_waits());
    ASSERT_TRUE(sender.begin(change_set({{size, false}})));
    EXPECT_EQ(replica.begun["full"], false);
    EXPECT_EQ(replica.begun["base_token"], "");  // a resync: over the latest point
    // Data and zero extents not aligned to blocks, as a full read may deliver them.
    ASSERT_TRUE(sender.data(0, 0, std::span(primary).first(50 * kResyncBlockBytes - 100)));
    ASSERT_TRUE(sender.data(0, 50 * kResyncBlockBytes - 100,
                            std::span(primary).subspan(50 * kResyncBlockBytes - 100, 100)));
    ASSERT_TRUE(sender.zero(0, 50 * kResyncBlockBytes, kResyncBlockBytes));
    ASSERT_TRUE(
        sender.data(0, 51 * kResyncBlockBytes, std::span(primary).subspan(51 * kResyncBlockBytes)));
    ASSERT_TRUE(sender.commit());
    EXPECT_EQ(replica.disks[0], primary);
    EXPECT_EQ(sender.stats().blocks_compared, 101u);
    EXPECT_EQ(sender.stats().blocks_sent, 3u);
    EXPECT_TRUE(sender.stats().resync);
    EXPECT_EQ(replica.hash_requests, 1u);
    EXPECT_LT(sender.stats().bytes_sent, 4 * kResyncBlockBytes);
}

TEST(CycleSender, IncrementalDisksKeepTheLinkBaseWhileAFullDiskIsCompared) {
    const std::size_t size = 8 * kResyncBlockBytes;
    auto a = random_bytes(size, 3), b = random_bytes(size, 4);
    FakeReplica replica;
    replica.disks = {a, b};
    replica.disks[1][5] ^= std::byte{1};
    CycleSender sender(replica, {"uuid", "token-acked", "token-latest", 0}, nullptr, nullptr,
                       no_waits());
    ASSERT_TRUE(sender.begin(change_set({{size, true}, {size, false}})));
    EXPECT_EQ(replica.begun["base_token"], "token-acked");
    ASSERT_TRUE(sender.data(0, kResyncBlockBytes, std::span(a).subspan(kResyncBlockBytes, 4096)));
    ASSERT_TRUE(sender.data(1, 0, b));
    ASSERT_TRUE(sender.commit());
    EXPECT_EQ(replica.disks[1], b);
    EXPECT_EQ(sender.stats().blocks_sent, 1u);
}

TEST(CycleSender, ResyncRequiredAnswerEndsTheCycleWithTheFlag) {
    FakeReplica replica;
    replica.disks = {std::vector<std::byte>(kResyncBlockBytes)};
    replica.answer_resync = true;
    CycleSender sender(replica, {"uuid", "old", "t0", 0}, nullptr, nullptr, no_waits());
    auto begun = sender.begin(change_set({{kResyncBlockBytes, true}}));
    ASSERT_FALSE(begun);
    EXPECT_TRUE(sender.resync_required());
    EXPECT_NE(begun.error().message().find("resync"), std::string::npos);
}

TEST(CycleSender, CheckpointIsNotRecordedWhenTheCommitGetsNoAnswer) {
    FakeReplica replica;
    replica.disks = {std::vector<std::byte>(kResyncBlockBytes)};
    replica.fail_commit = true;
    bool told = false;
    CycleSender sender(
        replica, {"uuid", "", "", 0},
        [&](const json&, const engine::ChangeSet&) -> Status {
            told = true;
            return {};
        },
        nullptr, no_waits());
    ASSERT_TRUE(sender.begin(change_set({{kResyncBlockBytes, false}})));
    auto data = random_bytes(kResyncBlockBytes, 5);
    ASSERT_TRUE(sender.data(0, 0, data));
    EXPECT_FALSE(sender.commit());
    EXPECT_FALSE(told);
    EXPECT_FALSE(sender.committed());
    sender.abort();
    EXPECT_TRUE(replica.aborted);
}

TEST(CycleSender, BandwidthCapPacesTheChunks) {
    const std::size_t size = 48u << 20;
    auto disk = random_bytes(size, 6);
    FakeReplica replica;
    replica.disks = {std::vector<std::byte>(size)};
    std::chrono::nanoseconds slept{0};
    CycleSender sender(replica, {"uuid", "", "", 8}, nullptr, nullptr, no_waits(&slept));
    ASSERT_TRUE(sender.begin(change_set({{size, false}})));
    ASSERT_TRUE(sender.data(0, 0, disk));
    ASSERT_TRUE(sender.commit());
    // Random data does not compress: ~48 MiB at 8 MiB/s with one second of burst ≈ 5 s.
    double seconds = std::chrono::duration<double>(slept).count();
    double expected = static_cast<double>(sender.stats().bytes_sent) / (8u << 20) - 1.0;
    EXPECT_NEAR(seconds, expected, 0.01);
}

TEST(Pacer, UnlimitedNeverWaitsAndBurstIsOneSecond) {
    Pacer none(0);
    EXPECT_EQ(none.reserve(1u << 30, {}), std::chrono::nanoseconds::zero());
    Pacer one(1);
    Pacer::time_point t{};
    EXPECT_EQ(one.reserve(1u << 20, t), std::chrono::nanoseconds::zero());  // the burst
    auto wait = one.reserve(2u << 20, t);
    EXPECT_NEAR(std::chrono::duration<double>(wait).count(), 2.0, 1e-6);
    // After the wait plus an idle second, one second's worth is available again.
    t += wait + std::chrono::seconds(1);
    EXPECT_EQ(one.reserve(1u << 20, t), std::chrono::nanoseconds::zero());
}

}  // namespace
}  // namespace vmshadow::replica
