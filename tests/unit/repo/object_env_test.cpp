// SPDX-License-Identifier: MIT
// The repository on the object Env: what travels to and from the store (listing points and
// starting a backup read no pack and nothing unchanged twice; restores read only ranges),
// the metadata cache's staleness rules, and spooled writes. The rest of the repository's
// behaviour on the object Env is the whole suite run again (unit.repo_on_blobs.*).
#include "repo/object_env.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "repo/check.h"
#include "repo/gc.h"
#include "repo_test_util.h"
#include "storage/local_blob_store.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;

// Counts what crosses the store's boundary, by the key's first folder.
class CountingStore final : public storage::BlobStore {
  public:
    explicit CountingStore(std::unique_ptr<storage::BlobStore> inner) : inner_(std::move(inner)) {}
    const std::string& location() const override { return inner_->location(); }
    Status put(std::string_view key, storage::ByteView data,
               const storage::PutOptions& o) override {
        count("put", key);
        return inner_->put(key, data, o);
    }
    Status put_file(std::string_view key, const std::string& path,
                    const storage::PutOptions& o) override {
        count("put", key);
        return inner_->put_file(key, path, o);
    }
    Status read_at(std::string_view key, std::uint64_t offset,
                   std::span<std::uint8_t> out) override {
        count("read_at", key);
        ranged_bytes += out.size();
        if (out.size() >= (1u << 20)) ++large_reads;
        return inner_->read_at(key, offset, out);
    }
    Result<std::vector<std::uint8_t>> get(std::string_view key) override {
        count("get", key);
        return inner_->get(key);
    }
    Result<storage::BlobInfo> stat(std::string_view key) override {
        count("stat", key);
        return inner_->stat(key);
    }
    Result<std::vector<storage::BlobInfo>> list(std::string_view prefix) override {
        count("list", prefix);
        return inner_->list(prefix);
    }
    Status remove(std::string_view key) override {
        count("remove", key);
        return inner_->remove(key);
    }

    // "get index", "read_at data", …
    int calls(const std::string& op, const std::string& folder) const {
        std::lock_guard lock(mu_);
        auto it = counts_.find(op + " " + folder);
        return it == counts_.end() ? 0 : it->second;
    }
    void reset() {
        std::lock_guard lock(mu_);
        counts_.clear();
        ranged_bytes = 0;
        large_reads = 0;
    }
    std::atomic<std::uint64_t> ranged_bytes{0};
    std::atomic<int> large_reads{0};  // reads of 1 MiB or more

  private:
    void count(const char* op, std::string_view key) {
        std::string folder(key.substr(0, key.find('/')));
        std::lock_guard lock(mu_);
        ++counts_[std::string(op) + " " + folder];
    }
    std::unique_ptr<storage::BlobStore> inner_;
    mutable std::mutex mu_;
    std::map<std::string, int> counts_;
};

class ObjectEnvTest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto local = storage::open_local_blob_store(dir.sub("bucket"));
        ASSERT_TRUE(local);
        store = std::make_shared<CountingStore>(std::move(*local));
        InitOptions init;
        init.chunk_size = 4096;
        auto env = new_env();
        ASSERT_TRUE(Repository::init(env->root(), init, *env));
    }
    // A fresh process's view: a new Env over the same bucket, sharing the host's cache.
    std::unique_ptr<ObjectEnv> new_env(bool cached = true, unsigned concurrency = 1) {
        auto env = ObjectEnv::open(
            store, ObjectEnvOptions{.spool_parent = dir.path(), .concurrency = concurrency});
        EXPECT_TRUE(env);
        if (cached) {
            EXPECT_TRUE((*env)->attach_cache(dir.sub("cache")));
        }
        return std::move(*env);
    }
    std::unique_ptr<Repository> open(ObjectEnv& env) {
        auto r = open_plain(env.root(), &env);
        EXPECT_TRUE(r) << r.error().message();
        return r ? std::move(*r) : nullptr;
    }

    TempDir dir;
    std::shared_ptr<CountingStore> store;
};

TEST_F(ObjectEnvTest, ListingPointsAndStartingABackupReadNoPackAndNothingUnchangedTwice) {
    {
        auto env = new_env();
        auto repo = open(*env);
        ASSERT_TRUE(backup_bytes(*repo, "vm", {{"vda", random_data(64 * 4096, 1)}}));
        ASSERT_TRUE(backup_bytes(*repo, "vm", {{"vda", random_data(64 * 4096, 2)}}));
    }
    store->reset();
    {  // the first reader on this host fills the cache from the bucket
        auto env = new_env();
        auto repo = open(*env);
        ASSERT_TRUE(repo->load_index());
        auto listing = repo->list_points();
        ASSERT_TRUE(listing);
        EXPECT_EQ(listing->points.size(), 2u);
        EXPECT_GT(store->calls("get", "index") + store->calls("get", "commits"), 0);
    }
    store->reset();
    {  // the next one reads only the listings (and the config)
        auto env = new_env();
        auto repo = open(*env);
        ASSERT_TRUE(repo->load_index());
        auto listing = repo->list_points();
        ASSERT_TRUE(listing);
        EXPECT_EQ(listing->points.size(), 2u);
        EXPECT_EQ(store->calls("get", "index"), 0);
        EXPECT_EQ(store->calls("get", "commits"), 0);
        EXPECT_EQ(store->calls("get", "annotations"), 0);
        // A backup's start: the previous point's map is read through the index, not packs'
        // whole objects.
        store->reset();
        ASSERT_TRUE(backup_bytes(*repo, "vm", {{"vda", random_data(64 * 4096, 2)}}));
        EXPECT_EQ(store->calls("get", "data"), 0);
    }
}

TEST_F(ObjectEnvTest, RestoreReadsOnlyTheRangesOfTheBlobsItNeeds) {
    auto env = new_env();
    auto repo = open(*env);
    Bytes disk = random_data(256 * 4096, 3);
    auto point = backup_bytes(*repo, "vm", {{"vda", disk}});
    ASSERT_TRUE(point);
    std::uint64_t stored = 0;
    auto packs = store->list("data/");
    ASSERT_TRUE(packs);
    for (const auto& o : *packs) stored += o.size;
    store->reset();
    auto fresh = new_env();
    auto reader = open(*fresh);
    ASSERT_TRUE(reader->load_index());
    auto back = read_disk(*reader, *point, "vda");
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, disk);
    EXPECT_EQ(store->calls("get", "data"), 0) << "a pack was read whole";
    EXPECT_GT(store->calls("read_at", "data"), 0);
    EXPECT_LE(store->ranged_bytes.load(), stored);
}

TEST_F(ObjectEnvTest, RestoreReadsThePacksNeighbouringFramesInOneRequest) {
    auto env = new_env();
    auto repo = open(*env);
    // 2 MiB of 4 KiB chunks written 1 MiB at a time: two whole frames, one after the other
    // in one pack (what a VM backup's runs make), inside a restore's first window.
    Bytes disk = random_data(512 * 4096, 4);
    auto point = backup_bytes(*repo, "vm", {{"vda", disk}}, 0, 256);
    ASSERT_TRUE(point);
    auto packs = store->list("data/");
    ASSERT_TRUE(packs);
    ASSERT_EQ(packs->size(), 1u);
    const DiskRecord* d = point->disk("vda");
    ASSERT_NE(d, nullptr);
    // Whatever the writes' size and the store's connections, the two frames (random data:
    // about 2 MiB stored) come in one read; the other reads are the map's small blocks.
    for (std::size_t max_write : {std::size_t{0}, std::size_t{4u << 20}}) {
        for (unsigned concurrency : {1u, 8u}) {
            store->reset();
            auto fresh = new_env(true, concurrency);
            auto reader = open(*fresh);
            ASSERT_TRUE(reader->load_index());
            MemorySink sink(d->size);
            ReadOptions ro;
            ro.max_write = max_write;
            ro.workers = concurrency > 1 ? 4 : 0;
            ASSERT_TRUE(restore_object(*reader, d->map, d->size, sink, ro));
            EXPECT_EQ(sink.data, disk);
            EXPECT_EQ(store->large_reads.load(), 1)
                << "max_write " << max_write << " concurrency " << concurrency;
            EXPECT_LE(store->calls("read_at", "data"), 4);
            // The index gives each pack's size: no HEAD per pack.
            EXPECT_EQ(store->calls("stat", "data"), 0);
        }
    }
}

TEST_F(ObjectEnvTest, APackIsStoredWholeOnlyWhenFinishedAndTheSpoolIsLeftEmpty) {
    auto env = new_env();
    auto repo = open(*env);
    ASSERT_TRUE(backup_bytes(*repo, "vm", {{"vda", random_data(64 * 4096, 4)}}));
    // Every pack went up in one put of a finished file: each one's trailer reads.
    auto packs = store->list("data/");
    ASSERT_TRUE(packs);
    ASSERT_FALSE(packs->empty());
    for (const auto& o : *packs) {
        auto file = env->open(env->root() + "/" + o.key);
        ASSERT_TRUE(file);
        EXPECT_TRUE(read_pack_trailer(**file, repo->codec())) << o.key;
    }
    auto spooled = env->list(env->root() + "/tmp");
    ASSERT_TRUE(spooled);
    EXPECT_TRUE(spooled->empty());
    EXPECT_FALSE(fs::exists(dir.sub("bucket/tmp"))) << "tmp/ is never stored";
}

TEST_F(ObjectEnvTest, CachedCopiesOfGoneOrDamagedObjectsAreNotUsed) {
    auto env = new_env();
    auto repo = open(*env);
    auto a = backup_bytes(*repo, "a", {{"vda", random_data(16 * 4096, 5)}});
    auto b = backup_bytes(*repo, "b", {{"vda", random_data(16 * 4096, 6)}});
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(repo->load_index());
    ASSERT_TRUE(repo->list_points());
    // Another host forgets a point and collects garbage (no cache of its own).
    {
        auto other_env = new_env(false);
        auto other = open(*other_env);
        auto lock = other->lock(LockMode::exclusive, "forget");
        ASSERT_TRUE(lock);
        ASSERT_TRUE(other->forget({a->id}));
        lock->reset();
        ASSERT_TRUE(other->load_index());
        ASSERT_TRUE(collect_garbage(*other, GcOptions{.grace_seconds = 0}));
    }
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    ASSERT_EQ(listing->points.size(), 1u);
    EXPECT_EQ(listing->points[0].vm, "b");
    std::size_t cached_commits = 0;
    for (auto& e : fs::directory_iterator(dir.sub("cache/commits")))
        cached_commits += !!e.is_regular_file();
    EXPECT_EQ(cached_commits, 1u) << "the forgotten point's old record left the cache";
    // A cached copy damaged on this host's disk is read from the bucket again.
    for (auto& e : fs::directory_iterator(dir.sub("cache/commits")))
        std::ofstream(e.path(), std::ios::in | std::ios::out | std::ios::binary).put('\x01');
    auto again = repo->list_points();
    ASSERT_TRUE(again);
    EXPECT_EQ(again->points.size(), 1u);
    EXPECT_TRUE(again->damaged.empty());
}

// Small packs, so that a few points make many, spread over data/'s folders.
constexpr std::uint64_t kSmallPacks = 64 << 10;

TEST_F(ObjectEnvTest, GcTakesPackAgesFromOneListingOfDataNotAStatPerPack) {
    {
        auto env = new_env();
        auto repo = open_plain(env->root(), env.get(), kSmallPacks);
        ASSERT_TRUE(repo);
        auto junk = backup_bytes(**repo, "junk", {{"vda", random_data(64 * 4096, 11)}});
        ASSERT_TRUE(junk);
        ASSERT_TRUE(backup_bytes(**repo, "keep", {{"vda", random_data(64 * 4096, 12)}}));
        ASSERT_TRUE((*repo)->forget({junk->id}));
    }
    struct Run {
        int stats = 0, listings = 0;
        GcReport report;
    };
    // A dry gc by a fresh process: what it asks the store about data/.
    auto gc = [&](std::int64_t grace) {
        store->reset();
        auto env = new_env();
        auto repo = open_plain(env->root(), env.get(), kSmallPacks);
        EXPECT_TRUE(repo);
        auto report = collect_garbage(**repo, {.dry_run = true, .grace_seconds = grace});
        EXPECT_TRUE(report) << report.error().message();
        return Run{store->calls("stat", "data"), store->calls("list", "data"),
                   report ? *report : GcReport{}};
    };
    Run without_ages = gc(0);
    Run with_ages = gc(kDefaultGraceSeconds);
    // The forgotten point's packs are young: each one's age was needed, and gc kept it.
    EXPECT_GE(with_ages.report.packs_kept_young, 3u);
    EXPECT_EQ(without_ages.report.packs_kept_young, 0u);
    EXPECT_EQ(with_ages.stats, without_ages.stats) << "a HEAD per pack for its age";
    EXPECT_EQ(with_ages.listings, without_ages.listings + 1);
}

TEST_F(ObjectEnvTest, CheckListsDataInOneListing) {
    {
        auto env = new_env();
        auto repo = open_plain(env->root(), env.get(), kSmallPacks);
        ASSERT_TRUE(repo);
        for (std::uint32_t i = 0; i < 3; ++i)
            ASSERT_TRUE(backup_bytes(**repo, "vm", {{"vda", random_data(64 * 4096, 20 + i)}}));
    }
    auto packs = store->list("data/");
    ASSERT_TRUE(packs);
    std::set<std::string> folders;
    for (const auto& o : *packs) folders.insert(o.key.substr(0, 7));
    ASSERT_GE(folders.size(), 3u) << "the packs should spread over several folders";
    store->reset();
    auto env = new_env();
    auto repo = open(*env);
    auto report = check_repository(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->problems.empty());
    EXPECT_EQ(report->packs, packs->size());
    EXPECT_EQ(store->calls("list", "data"), 1) << "a listing per folder of data/";
}

TEST_F(ObjectEnvTest, PathsOutsideTheRepositoryAreRefused) {
    auto env = new_env();
    auto file = env->open("/etc/passwd");
    ASSERT_FALSE(file);
    EXPECT_EQ(file.error().kind(), ErrorKind::internal);
}

}  // namespace
}  // namespace vmshadow::repo::test
