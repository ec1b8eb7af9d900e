// SPDX-License-Identifier: MIT
// The replica store on real qemu-img/qemu-nbd in a temp folder: cycles become points only when
// committed, pruning keeps every remaining point's content, overlays pin their point, adopt,
// block hashes, the record's defences.
#include "replica/replica_store.h"

#include <openssl/evp.h>

#include <map>
#include <nlohmann/json.hpp>

#include "store_test_util.h"

namespace vmshadow::replica::test {
namespace {

constexpr std::uint64_t kMiB = 1u << 20;

// The store beside the bytes every point should hold (per disk), so a test checks a point
// against what was written rather than against another read.
struct Replica {
    TempDir dir;
    fs::path folder = dir.path / "web1-6f1c2d3e";
    std::unique_ptr<ReplicaStore> store;
    std::map<std::uint64_t, std::vector<std::string>> expected;  // seq -> disk bytes

    explicit Replica(std::vector<StoreDisk> disks = {{"vda", 4 * kMiB}, {"vdb", 2 * kMiB}},
                     unsigned history = 4) {
        auto made = ReplicaStore::create(folder, identity(std::move(disks), history));
        EXPECT_TRUE(made) << made.error().message();
        if (made) store = std::move(*made);
    }

    struct Write {
        std::size_t disk;
        std::uint64_t offset;
        std::string data;  // empty with `zero`: zeros of `zero` bytes
        std::uint64_t zero = 0;
    };

    // Applies one cycle to the store and to the expected bytes; returns the point.
    RecoveryPoint cycle(const CycleHeader& h, const std::vector<Write>& writes) {
        auto cycle = store->begin_cycle(h);
        EXPECT_TRUE(cycle) << cycle.error().message();
        if (!cycle) return {};
        std::vector<std::string> bytes;
        if (h.full || store->points().empty()) {
            for (const auto& d : store->identity().disks) bytes.emplace_back(d.size, '\0');
        } else {
            bytes = expected.at(store->latest()->seq);
        }
        for (const auto& w : writes) {
            if (w.zero) {
                EXPECT_TRUE((*cycle)->zero(w.disk, w.offset, w.zero));
                std::fill_n(bytes[w.disk].begin() + static_cast<std::ptrdiff_t>(w.offset), w.zero,
                            '\0');
            } else {
                auto ok = (*cycle)->write(w.disk, w.offset, as_bytes(w.data));
                EXPECT_TRUE(ok) << ok.error().message();
                if (ok) bytes[w.disk].replace(w.offset, w.data.size(), w.data);
            }
        }
        auto point = (*cycle)->commit();
        EXPECT_TRUE(point) << point.error().message();
        if (!point) return {};
        expected[point->seq] = std::move(bytes);
        return *point;
    }

    RecoveryPoint full(const std::string& token) {
        std::vector<Write> writes{{0, 0, random_bytes(kMiB, 1)}};
        if (store->identity().disks.size() > 1) writes.push_back({1, kMiB, random_bytes(kMiB, 2)});
        return cycle(header("c-" + token, "", token, true), writes);
    }

    // Every point the store holds reads exactly what was written for it.
    void expect_points_hold_their_content() {
        for (const auto& p : store->points())
            for (std::size_t d = 0; d < store->identity().disks.size(); ++d)
                EXPECT_TRUE(point_bytes(*store, p.seq, d, dir.path) == expected.at(p.seq)[d])
                    << "point " << p.seq << " disk " << d;
    }

    void reopen() {
        store.reset();
        auto opened = ReplicaStore::open(folder);
        ASSERT_TRUE(opened) << opened.error().message();
        store = std::move(*opened);
    }
};

TEST(ReplicaStore, FullThenIncrementalCycleGivesTheExpectedBytes) {
    Replica r;
    ASSERT_TRUE(r.store);
    auto p0 = r.full("t0");
    EXPECT_EQ(p0.seq, 0u);
    auto p1 = r.cycle(header("c1", "t0", "t1"), {{0, 512 * 1024, random_bytes(64 * 1024, 3)},
                                                 {0, 0, "", 64 * 1024},
                                                 {1, kMiB + 4096, "", 8192},
                                                 {1, 2 * kMiB - 4096, random_bytes(4096, 4)}});
    EXPECT_EQ(p1.seq, 1u);
    EXPECT_EQ(p1.token, "t1");
    ASSERT_EQ(r.store->points().size(), 2u);
    EXPECT_EQ(r.store->latest()->token, "t1");
    r.expect_points_hold_their_content();
    r.reopen();
    EXPECT_EQ(r.store->points().size(), 2u);
    r.expect_points_hold_their_content();
}

TEST(ReplicaStore, CycleDestroyedWithoutCommitIsDiscarded) {
    Replica r;
    r.full("t0");
    {
        auto cycle = r.store->begin_cycle(header("c1", "t0", "t1"));
        ASSERT_TRUE(cycle) << cycle.error().message();
        ASSERT_TRUE((*cycle)->write(0, 0, as_bytes(random_bytes(4096, 9))));
        EXPECT_TRUE(fs::exists(r.folder / "p1-vda.qcow2"));
    }
    EXPECT_FALSE(fs::exists(r.folder / "p1-vda.qcow2"));
    EXPECT_FALSE(fs::exists(r.folder / "p1-vdb.qcow2"));
    ASSERT_EQ(r.store->points().size(), 1u);
    r.expect_points_hold_their_content();
    // The next cycle starts cleanly.
    r.cycle(header("c1b", "t0", "t1"), {{0, 0, random_bytes(4096, 10)}});
    EXPECT_EQ(r.store->points().size(), 2u);
    r.expect_points_hold_their_content();
}

TEST(ReplicaStore, CycleCutOffByAKillIsRemovedOnReopen) {
    Replica r;
    r.full("t0");
    {
        auto cycle = r.store->begin_cycle(header("c1", "t0", "t1"));
        ASSERT_TRUE(cycle);
        ASSERT_TRUE((*cycle)->write(0, 0, as_bytes(random_bytes(4096, 9))));
        // What a killed daemon leaves: the new layer beside the record, and a record temp.
        fs::copy_file(r.folder / "p1-vda.qcow2", r.dir.path / "kept.qcow2");
    }
    r.store.reset();
    fs::copy_file(r.dir.path / "kept.qcow2", r.folder / "p1-vda.qcow2");
    write_file(r.folder / ".replica.json.AbC123", "{half");
    write_file(r.folder / "test-vda.qcow2", "x");
    write_file(r.folder / "notes.txt", "someone else's file");
    r.reopen();
    EXPECT_FALSE(fs::exists(r.folder / "p1-vda.qcow2"));
    EXPECT_FALSE(fs::exists(r.folder / ".replica.json.AbC123"));
    EXPECT_FALSE(fs::exists(r.folder / "test-vda.qcow2"));
    EXPECT_TRUE(fs::exists(r.folder / "notes.txt"));
    ASSERT_EQ(r.store->points().size(), 1u);
    r.expect_points_hold_their_content();
}

TEST(ReplicaStore, CanApplyTakesAnyHeldTokenAndRefusesOthers) {
    Replica r;
    EXPECT_TRUE(r.store->can_apply(header("c", "", "t0", true)));
    auto empty = r.store->can_apply(header("c", "t0", "t1"));
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.error().message().find("resync required"), std::string::npos);
    r.full("t0");
    r.cycle(header("c1", "t0", "t1"), {{0, 0, random_bytes(512, 1)}});
    r.cycle(header("c2", "t1", "t2"), {{0, 0, random_bytes(512, 2)}});
    EXPECT_TRUE(r.store->can_apply(header("c3", "t2", "t3")));
    EXPECT_TRUE(r.store->can_apply(header("c3", "t0", "t3")));  // a lost ack: sent again, larger
    EXPECT_TRUE(r.store->can_apply(header("c3", "", "t3")));    // a resync's differences
    EXPECT_TRUE(r.store->can_apply(header("c3", "", "t3", true)));
    auto unknown = r.store->can_apply(header("c3", "t9", "t10"));
    ASSERT_FALSE(unknown);
    EXPECT_EQ(unknown.error().kind(), ErrorKind::conflict);
    EXPECT_NE(unknown.error().message().find("resync required: the replica's latest point is t2"),
              std::string::npos)
        << unknown.error().message();
    EXPECT_FALSE(r.store->begin_cycle(header("c3", "t9", "t10")));
    // A grown disk: only a full cycle, which makes new base images.
    r.store.reset();
    auto grown = ReplicaStore::create(r.folder, identity({{"vda", 6 * kMiB}, {"vdb", 2 * kMiB}}));
    ASSERT_TRUE(grown) << grown.error().message();
    r.store = std::move(*grown);
    EXPECT_EQ(r.store->points().size(), 3u);
    auto changed = r.store->can_apply(header("c3", "t2", "t3"));
    ASSERT_FALSE(changed);
    EXPECT_NE(changed.error().message().find("changed"), std::string::npos);
    r.full("t3");
    ASSERT_EQ(r.store->points().size(), 1u);
    EXPECT_EQ(r.store->latest()->seq, 3u);
    EXPECT_EQ(r.expected.at(3)[0].size(), 6 * kMiB);
    r.expect_points_hold_their_content();
    EXPECT_EQ(files_starting(r.folder, "p"), 2u);  // the older layers are gone
}

TEST(ReplicaStore, PruningKeepsEveryRemainingPointsContent) {
    Replica r({{"vda", 4 * kMiB}}, 2);
    r.full("t0");
    for (unsigned i = 1; i <= 6; ++i) {
        r.cycle(
            header("c" + std::to_string(i), "t" + std::to_string(i - 1), "t" + std::to_string(i)),
            {{0, (i % 4) * kMiB / 2, random_bytes(kMiB, 100 + i)},
             {0, ((i + 1) % 8) * kMiB / 2, "", 64 * 1024}});
        EXPECT_LE(r.store->points().size(), 3u);
        r.expect_points_hold_their_content();
        EXPECT_EQ(files_starting(r.folder, "p"), r.store->points().size());
    }
    ASSERT_EQ(r.store->points().size(), 3u);
    EXPECT_EQ(r.store->points().front().seq, 4u);
    EXPECT_EQ(r.store->latest()->seq, 6u);
    // Fewer kept points: merged at once.
    ASSERT_TRUE(r.store->set_history(0));
    ASSERT_EQ(r.store->points().size(), 1u);
    r.expect_points_hold_their_content();
    EXPECT_EQ(files_starting(r.folder, "p"), 1u);
}

// A prune cut off after each of its steps (replica_cycle.cpp): 1 the record dropped the
// oldest point, 2 the next layer was committed into the base, 3 the layer above was rebased.
// Every recorded point reads its content, and the next prune finishes the merge.
TEST(ReplicaStore, MergeCutOffAfterAnyStepKeepsThePointsAndIsFinished) {
    for (int step = 1; step <= 3; ++step) {
        SCOPED_TRACE("cut off after step " + std::to_string(step));
        Replica r({{"vda", 4 * kMiB}}, 4);
        r.full("t0");
        r.cycle(header("c1", "t0", "t1"), {{0, 0, random_bytes(kMiB, 1)}, {0, 2 * kMiB, "", kMiB}});
        r.cycle(header("c2", "t1", "t2"), {{0, kMiB / 2, random_bytes(kMiB, 2)}});
        r.store.reset();
        auto j = nlohmann::json::parse(read_file(r.folder / "replica.json"));
        j["points"].erase(0);
        write_file(r.folder / "replica.json", j.dump());
        if (step >= 2) {
            ASSERT_TRUE(run_checked(
                {"qemu-img", "commit", "-q", "-d", (r.folder / "p1-vda.qcow2").string()}));
        }
        if (step >= 3) {
            ASSERT_TRUE(run_checked({"qemu-img", "rebase", "-q", "-u", "-b", "p0-vda.qcow2", "-F",
                                     "qcow2", (r.folder / "p2-vda.qcow2").string()}));
        }
        r.reopen();
        ASSERT_EQ(r.store->points().size(), 2u);
        r.expect_points_hold_their_content();
        r.cycle(header("c3", "t2", "t3"), {{0, 3 * kMiB, random_bytes(kMiB, 3)}});
        ASSERT_EQ(r.store->points().size(), 3u);
        r.expect_points_hold_their_content();
        EXPECT_EQ(files_starting(r.folder, "p"), 3u);  // the pending merge was finished
    }
}

TEST(ReplicaStore, AdoptedImageIsPointZeroAndOnlyRead) {
    TempDir images;
    fs::path image = images.path / "web1-vda.img";
    std::string content = random_bytes(4 * kMiB, 7);
    write_file(image, content);
    Replica r({{"vda", 4 * kMiB}});
    r.store.reset();
    fs::remove_all(r.folder);
    auto adopted = ReplicaStore::adopt(r.folder, identity({{"vda", 4 * kMiB}}, 0), {image},
                                       "reverse-1", "2026-12-07T08:00:00Z");
    ASSERT_TRUE(adopted) << adopted.error().message();
    r.store = std::move(*adopted);
    ASSERT_EQ(r.store->points().size(), 1u);
    EXPECT_EQ(r.store->latest()->token, "reverse-1");
    auto chain = r.store->chain(0, 0);
    ASSERT_TRUE(chain);
    ASSERT_EQ(chain->size(), 2u);
    EXPECT_EQ(chain->back(), image);
    r.expected[0] = {content};
    r.expect_points_hold_their_content();
    // Cycles above it, pruned (history 0): the image itself never changes.
    r.cycle(header("c1", "reverse-1", "t1"), {{0, 0, random_bytes(kMiB, 8)}});
    r.cycle(header("c2", "t1", "t2"), {{0, kMiB, "", kMiB}});
    ASSERT_EQ(r.store->points().size(), 1u);
    r.expect_points_hold_their_content();
    EXPECT_TRUE(read_file(image) == content);
    r.reopen();
    r.expect_points_hold_their_content();
}

TEST(ReplicaStore, AdoptRefusesAnImageOfAnotherSize) {
    TempDir dir;
    write_file(dir.path / "small.img", std::string(kMiB, '\0'));
    auto adopted = ReplicaStore::adopt(dir.path / "store", identity({{"vda", 4 * kMiB}}),
                                       {dir.path / "small.img"}, "t", "2026-12-07T08:00:00Z");
    ASSERT_FALSE(adopted);
    EXPECT_EQ(adopted.error().kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(files_starting(dir.path / "store", "p"), 0u);
}

TEST(ReplicaStore, TestOverlaysPinTheirPointAgainstPruning) {
    Replica r({{"vda", 4 * kMiB}}, 0);
    r.full("t0");
    r.cycle(header("c1", "t0", "t1"), {{0, 0, random_bytes(kMiB, 1)}});
    ASSERT_EQ(r.store->points().size(), 1u);
    auto overlays = r.store->make_overlays("test", 1);
    ASSERT_TRUE(overlays) << overlays.error().message();
    ASSERT_EQ(overlays->size(), 1u);
    EXPECT_EQ(overlays->front(), r.folder / "test-vda.qcow2");
    EXPECT_FALSE(r.store->make_overlays("test", 1));  // one test at a time
    r.cycle(header("c2", "t1", "t2"), {{0, 0, random_bytes(kMiB, 2)}});
    r.cycle(header("c3", "t2", "t3"), {{0, kMiB, random_bytes(kMiB, 3)}});
    ASSERT_EQ(r.store->points().size(), 3u);  // pruning waits
    EXPECT_EQ(r.store->points().front().seq, 1u);
    r.expect_points_hold_their_content();
    EXPECT_TRUE(image_bytes(overlays->front(), r.dir.path) == r.expected.at(1)[0]);
    r.reopen();  // the overlay is recorded: not a leftover
    EXPECT_TRUE(fs::exists(overlays->front()));
    ASSERT_TRUE(r.store->drop_overlays("test"));
    EXPECT_FALSE(fs::exists(overlays->front()));
    ASSERT_EQ(r.store->points().size(), 1u);
    EXPECT_EQ(r.store->latest()->seq, 3u);
    r.expect_points_hold_their_content();
}

TEST(ReplicaStore, LiveOverlaysStopCyclesAndCommitFailoverKeepsOnlyThePoint) {
    Replica r({{"vda", 4 * kMiB}}, 4);
    r.full("t0");
    r.cycle(header("c1", "t0", "t1"), {{0, 0, random_bytes(kMiB, 1)}});
    r.cycle(header("c2", "t1", "t2"), {{0, kMiB, random_bytes(kMiB, 2)}});
    auto live = r.store->make_overlays("live", 1);
    ASSERT_TRUE(live) << live.error().message();
    auto refused = r.store->begin_cycle(header("c3", "t2", "t3"));
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::conflict);
    ASSERT_TRUE(r.store->commit_failover(1));
    ASSERT_EQ(r.store->points().size(), 1u);
    EXPECT_EQ(r.store->latest()->seq, 1u);
    EXPECT_FALSE(fs::exists(r.folder / "p2-vda.qcow2"));
    EXPECT_TRUE(image_bytes(live->front(), r.dir.path) == r.expected.at(1)[0]);
    ASSERT_TRUE(r.store->set_state("failed-over"));
    r.reopen();
    EXPECT_EQ(r.store->state(), "failed-over");
    EXPECT_TRUE(image_bytes(live->front(), r.dir.path) == r.expected.at(1)[0]);
}

std::array<std::byte, 32> sha256(std::string_view data) {
    std::array<std::byte, 32> out{};
    unsigned int n = 0;
    EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &n,
               EVP_sha256(), nullptr);
    return out;
}

TEST(ReplicaStore, BlockHashesMatchTheLatestPointsData) {
    const std::uint64_t size = 2 * kMiB + 4096;  // the last 64 KiB block is short
    Replica r({{"vda", size}});
    r.cycle(header("c0", "", "t0", true), {{0, 0, random_bytes(size, 5)}});
    r.cycle(header("c1", "t0", "t1"), {{0, 64 * 1024, "", 128 * 1024}});
    const std::string& bytes = r.expected.at(1)[0];
    auto hashes = r.store->block_hashes(0, 64 * 1024, 0, 65536);
    ASSERT_TRUE(hashes) << hashes.error().message();
    ASSERT_EQ(hashes->size(), 33u);
    for (std::size_t b = 0; b < hashes->size(); ++b)
        EXPECT_EQ((*hashes)[b], sha256(std::string_view(bytes).substr(b * 64 * 1024, 64 * 1024)))
            << "block " << b;
    auto tail = r.store->block_hashes(0, kMiB, 2, 1);
    ASSERT_TRUE(tail);
    ASSERT_EQ(tail->size(), 1u);
    EXPECT_EQ(tail->front(), sha256(std::string_view(bytes).substr(2 * kMiB)));
    EXPECT_FALSE(r.store->block_hashes(0, 1000, 0, 1));
    EXPECT_FALSE(r.store->block_hashes(0, 64 * 1024, 0, 65537));
    EXPECT_FALSE(r.store->block_hashes(1, 64 * 1024, 0, 1));
    EXPECT_FALSE(r.store->block_hashes(0, 64 * 1024, 34, 1));
}

TEST(ReplicaStore, BlockHashesOfUnwrittenAndZeroedAreasAreThoseOfZeros) {
    const std::uint64_t size = 10 * kMiB + 512;
    Replica r({{"vda", size}});
    r.cycle(header("c0", "", "t0", true),
            {{0, 3 * kMiB, random_bytes(64 * 1024, 6)}, {0, 9 * kMiB, random_bytes(kMiB, 7)}});
    r.cycle(header("c1", "t0", "t1"), {{0, 9 * kMiB, "", kMiB}});
    const std::string& bytes = r.expected.at(1)[0];
    auto hashes = r.store->block_hashes(0, 64 * 1024, 0, 65536);
    ASSERT_TRUE(hashes) << hashes.error().message();
    ASSERT_EQ(hashes->size(), 161u);
    for (std::size_t b = 0; b < hashes->size(); ++b)
        EXPECT_EQ((*hashes)[b], sha256(std::string_view(bytes).substr(b * 64 * 1024, 64 * 1024)))
            << "block " << b;
}

TEST(ReplicaStore, WritesOutsideTheDiskAreRefused) {
    Replica r({{"vda", 4 * kMiB}});
    auto cycle = r.store->begin_cycle(header("c0", "", "t0", true));
    ASSERT_TRUE(cycle);
    EXPECT_FALSE((*cycle)->write(0, 4 * kMiB - 512, as_bytes(std::string(1024, 'x'))));
    EXPECT_FALSE((*cycle)->zero(0, ~std::uint64_t{0} - 511, 1024));
    EXPECT_FALSE((*cycle)->write(1, 0, as_bytes(std::string(512, 'x'))));
    EXPECT_FALSE(r.store->begin_cycle(header("c1", "", "t1", true)));  // one at a time
}

TEST(ReplicaStore, SecondOpenIsAConflictNamingTheHolder) {
    Replica r;
    auto again = ReplicaStore::open(r.folder);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::conflict);
    EXPECT_NE(again.error().message().find("process " + std::to_string(::getpid())),
              std::string::npos)
        << again.error().message();
}

TEST(ReplicaStore, CreateForAnotherVmIsAConflict) {
    Replica r;
    r.store.reset();
    auto other = identity({{"vda", kMiB}});
    other.vm_uuid = "00000000-0000-4000-8000-000000000002";
    auto made = ReplicaStore::create(r.folder, other);
    ASSERT_FALSE(made);
    EXPECT_EQ(made.error().kind(), ErrorKind::conflict);
}

TEST(ReplicaStore, OpenWithoutARecordIsNotFound) {
    TempDir dir;
    auto opened = ReplicaStore::open(dir.path);
    ASSERT_FALSE(opened);
    EXPECT_EQ(opened.error().kind(), ErrorKind::not_found);
}

TEST(ReplicaStore, DamagedOrForeignRecordIsAnErrorNamingTheFile) {
    Replica r;
    r.full("t0");
    r.store.reset();
    const fs::path record = r.folder / "replica.json";
    const std::string good = read_file(record);
    auto edited = [&](const std::function<void(nlohmann::json&)>& edit) {
        auto j = nlohmann::json::parse(good);
        edit(j);
        return j.dump();
    };
    const std::vector<std::string> bad = {
        "",
        "{not json",
        "[]",
        R"({"format":"something-else","version":1})",
        edited([](auto& j) { j["version"] = 99; }),
        edited([](auto& j) { j["points"][0]["seq"] = "zero"; }),
        edited([](auto& j) { j["identity"].erase("disks"); }),
        edited([](auto& j) { j["stack"][0]["files"][0] = "../../etc/passwd"; }),
        edited([](auto& j) { j["points"][0]["layers"][0] = "p7-vda.qcow2"; }),
        edited([](auto& j) {
            j["overlays"]["test"] = {{"seq", 5}, {"files", {"test-vda.qcow2"}}};
        }),
        edited([](auto& j) { j["identity"]["history"] = 1000; }),
    };
    for (const auto& text : bad) {
        write_file(record, text);
        auto opened = ReplicaStore::open(r.folder);
        ASSERT_FALSE(opened) << text;
        EXPECT_NE(opened.error().message().find(record.string()), std::string::npos)
            << opened.error().message();
    }
    write_file(record, good);
    r.reopen();
    r.expect_points_hold_their_content();
}

TEST(ReplicaStore, IdentityIsCheckedOnCreate) {
    TempDir dir;
    EXPECT_FALSE(ReplicaStore::create(dir.path / "a", identity({})));
    EXPECT_FALSE(ReplicaStore::create(dir.path / "b", identity({{"../x", kMiB}})));
    EXPECT_FALSE(ReplicaStore::create(dir.path / "c", identity({{"vda", kMiB}, {"vda", kMiB}})));
    EXPECT_FALSE(ReplicaStore::create(dir.path / "d", identity({{"vda", 1000}})));
    EXPECT_FALSE(ReplicaStore::create(dir.path / "e", identity({{"vda", kMiB}}, 25)));
}

}  // namespace
}  // namespace vmshadow::replica::test
