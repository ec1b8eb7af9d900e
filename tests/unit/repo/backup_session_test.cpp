// SPDX-License-Identifier: MIT
#include "repo/backup_session.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "repo/check.h"
#include "repo/format.h"
#include "repo_test_util.h"
#include "unit/common/address_limit.h"

namespace vmshadow::repo::test {
namespace {

class BackupSessionTest : public ::testing::Test {
  protected:
    void SetUp() override {
        InitOptions init;
        init.chunk_size = 4096;
        init.map_fanout = 8;  // small, so even small disks get several map levels
        ASSERT_TRUE(Repository::init(dir.sub("repo"), init));
        auto r = open_plain(dir.sub("repo"));
        ASSERT_TRUE(r) << r.error().message();
        repo = std::move(*r);
    }
    TempDir dir;
    std::unique_ptr<Repository> repo;
};

TEST_F(BackupSessionTest, RoundTripIsBitExactForOddSizesAndWorkerCounts) {
    for (unsigned workers : {0u, 1u, 3u}) {
        for (std::size_t size :
             {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4096},
              std::size_t{123457}, std::size_t{8 * 8 * 4096 + 5}}) {
            Bytes data = text_data(size, static_cast<std::uint32_t>(size));
            auto p = backup_bytes(*repo, "vm" + std::to_string(size), {{"vda", data}}, workers);
            ASSERT_TRUE(p) << p.error().message();
            auto back = read_disk(*repo, *p, "vda", workers);
            ASSERT_TRUE(back) << back.error().message();
            EXPECT_EQ(*back, data) << "size " << size << " workers " << workers;
        }
    }
}

TEST_F(BackupSessionTest, ThreadedBackupWithManyPacksAndRecycledBuffersRoundTrips) {
    // Small packs: many of them are finished by the session's finisher thread while the
    // workers go on; write buffers come from DiskWriter::buffer and are recycled.
    auto small = open_plain(dir.sub("repo"), nullptr, 16 * 1024);
    ASSERT_TRUE(small) << small.error().message();
    Bytes data = random_data(3 * 1024 * 1024 + 77, 5);
    for (std::size_t i = 0; i < data.size(); i += 3 * 4096) data[i] = 0;  // some text, too
    for (int round = 0; round < 2; ++round) {
        auto session =
            BackupSession::begin(**small, {.workers = 3, .max_inflight_bytes = 64 * 4096});
        ASSERT_TRUE(session) << session.error().message();
        PointBuilder& point = (*session)->add_point("packs", "crash");
        auto disk = point.add_disk("vda", data.size(), nullptr);
        ASSERT_TRUE(disk);
        const std::uint64_t piece = 5 * 4096;
        for (std::uint64_t off = 0; off < data.size(); off += piece) {
            std::uint64_t n = std::min<std::uint64_t>(piece, data.size() - off);
            Bytes buffer = (*disk)->buffer(n);
            ASSERT_EQ(buffer.size(), n);
            std::memcpy(buffer.data(), data.data() + off, n);
            ASSERT_TRUE((*disk)->write(off, std::move(buffer)));
        }
        ASSERT_TRUE((*disk)->finish());
        auto committed = (*session)->commit();
        ASSERT_TRUE(committed) << committed.error().message();
        auto back = read_disk(**small, committed->front(), "vda", 2);
        ASSERT_TRUE(back) << back.error().message();
        EXPECT_EQ(*back, data);
        data[12345] ^= 1;  // the second round stores one changed chunk
    }
    auto report = check_repository(**small, {.read_data = true});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->problems.empty());
}

TEST_F(BackupSessionTest, ZeroRangesAreHolesAndCostNothing) {
    Bytes data(64 * 4096, 0);
    auto p = backup_bytes(*repo, "zeros", {{"vda", data}});
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->disks[0].map.root.is_zero());
    EXPECT_EQ(p->bytes_added, 0u);
    auto back = read_disk(*repo, *p, "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, data);
}

TEST_F(BackupSessionTest, SparseTerabyteDiskCostsOnlyItsData) {
    // The default shape (64 KiB chunks, 512 ids per map block): 1 TiB needs 1 MiB of level-0
    // ids in memory while it is written, and nothing for its holes on disk.
    ASSERT_TRUE(Repository::init(dir.sub("default"), {}));
    auto opened = open_plain(dir.sub("default"));
    ASSERT_TRUE(opened);
    auto& repo = *opened;
    auto session = BackupSession::begin(*repo, {});
    ASSERT_TRUE(session);
    PointBuilder& point = (*session)->add_point("huge", "crash");
    const std::uint64_t tib = 1ull << 40;
    auto disk = point.add_disk("vda", tib, nullptr);
    ASSERT_TRUE(disk);
    const std::uint64_t cs = 64 * 1024;
    Bytes a = random_data(cs, 1), b = random_data(cs, 2);
    ASSERT_TRUE((*disk)->write(0, a));
    ASSERT_TRUE((*disk)->zero(cs, (1ull << 39) - cs));
    ASSERT_TRUE((*disk)->write(tib - cs, b));
    ASSERT_TRUE((*disk)->finish());
    auto committed = (*session)->commit();
    ASSERT_TRUE(committed) << committed.error().message();
    // Two chunks and one path of map blocks per chunk: a few KiB, not gigabytes.
    EXPECT_LT(committed->front().bytes_added, 2 * cs + 64u * 1024);
    ChunkMap map(*repo, committed->front().disks[0].map, tib, cs, 512);
    auto first = map.chunk_id(0), last = map.chunk_id(tib / cs - 1), mid = map.chunk_id(12345);
    ASSERT_TRUE(first && last && mid);
    EXPECT_EQ(*first, repo->codec().id_of(a));
    EXPECT_EQ(*last, repo->codec().id_of(b));
    EXPECT_TRUE(mid->is_zero());
}

TEST_F(BackupSessionTest, UnchangedDiskAddsOnlyTheManifest) {
    Bytes data = random_data(200 * 4096, 7);
    auto first = backup_bytes(*repo, "web", {{"vda", data}});
    ASSERT_TRUE(first);
    auto second = backup_bytes(*repo, "web", {{"vda", data}});
    ASSERT_TRUE(second);
    EXPECT_EQ(second->bytes_added, 0u);
    EXPECT_EQ(second->disks[0].map.root, first->disks[0].map.root);
    EXPECT_EQ(second->parent, first->id);
}

TEST_F(BackupSessionTest, IncrementalStoresOnlyChangedChunksAndTheirMapPath) {
    Bytes data = random_data(256 * 4096, 9);
    ASSERT_TRUE(backup_bytes(*repo, "db", {{"vda", data}}));
    // Change 4 bytes in 3 scattered chunks.
    for (std::size_t off : {std::size_t{100}, std::size_t{77 * 4096 + 5}, std::size_t{250 * 4096}})
        data[off] ^= 0xff;
    auto p = backup_bytes(*repo, "db", {{"vda", data}});
    ASSERT_TRUE(p);
    // 3 new chunks (uncompressible, 4 KiB each) + at most 3 map paths of 3 levels.
    EXPECT_LE(p->bytes_added, 3u * 4200 + 9u * (8 * 32 + 100));
    EXPECT_GE(p->bytes_added, 3u * 4096);
    auto back = read_disk(*repo, *p, "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, data);
}

TEST_F(BackupSessionTest, UnchangedRangesFromDirtyBitmapReuseTheBase) {
    Bytes data = random_data(100 * 4096, 3);
    auto base = backup_bytes(*repo, "vm", {{"vda", data}});
    ASSERT_TRUE(base);
    // The live engine's incremental: only chunk 50 is dirty, the rest is declared unchanged.
    Bytes dirty = random_data(4096, 4);
    std::copy(dirty.begin(), dirty.end(), data.begin() + 50 * 4096);
    auto session = BackupSession::begin(*repo, {});
    ASSERT_TRUE(session);
    PointBuilder& point = (*session)->add_point("vm", "application");
    auto disk = point.add_disk("vda", data.size(), &*base);
    ASSERT_TRUE(disk);
    ASSERT_TRUE((*disk)->unchanged(0, 50 * 4096));
    ASSERT_TRUE((*disk)->write(50 * 4096, dirty));
    ASSERT_TRUE((*disk)->unchanged(51 * 4096, 49 * 4096));
    ASSERT_TRUE((*disk)->finish());
    EXPECT_EQ((*disk)->stats().chunks_new, 1u);
    auto committed = (*session)->commit();
    ASSERT_TRUE(committed);
    auto back = read_disk(*repo, committed->front(), "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, data);
}

TEST_F(BackupSessionTest, RangesMustAscendAndBeAligned) {
    auto session = BackupSession::begin(*repo, {});
    ASSERT_TRUE(session);
    auto disk = (*session)->add_point("vm", "crash").add_disk("vda", 10 * 4096, nullptr);
    ASSERT_TRUE(disk);
    EXPECT_FALSE((*disk)->write(100, Bytes(4096, 1)));
    ASSERT_TRUE((*disk)->write(4 * 4096, Bytes(4096, 1)));
    EXPECT_FALSE((*disk)->write(0, Bytes(4096, 1)));
    EXPECT_FALSE((*disk)->unchanged(6 * 4096, 4096)) << "no base point";
}

TEST_F(BackupSessionTest, GroupOfPointsCommitsAsOneRecord) {
    auto session = BackupSession::begin(*repo, {});
    ASSERT_TRUE(session);
    Bytes a = random_data(10 * 4096, 1), b = random_data(12 * 4096, 2);
    for (auto [vm, data] : {std::pair{"web", &a}, std::pair{"db", &b}}) {
        PointBuilder& p = (*session)->add_point(vm, "crash");
        auto disk = p.add_disk("vda", data->size(), nullptr);
        ASSERT_TRUE(disk);
        ASSERT_TRUE((*disk)->write(0, *data));
        ASSERT_TRUE(p.add_file("domain.xml", "domain_xml", as_bytes("<domain/>")));
    }
    {
        auto listing = repo->list_points();
        ASSERT_TRUE(listing);
        EXPECT_TRUE(listing->points.empty()) << "nothing exists before commit";
    }
    auto committed = (*session)->commit();
    ASSERT_TRUE(committed);
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    ASSERT_EQ(listing->points.size(), 2u);
    EXPECT_EQ(listing->points[0].commit, listing->points[1].commit);
    auto xml = read_file_record(*repo, listing->points[0].files.at(0));
    ASSERT_TRUE(xml) << xml.error().message();
    EXPECT_EQ(std::string(xml->begin(), xml->end()), "<domain/>");
}

TEST_F(BackupSessionTest, AbandonedSessionLeavesNoPointAndNoFiles) {
    {
        auto session = BackupSession::begin(*repo, {});
        ASSERT_TRUE(session);
        auto disk = (*session)->add_point("vm", "crash").add_disk("vda", 40 * 4096, nullptr);
        ASSERT_TRUE((*disk)->write(0, random_data(40 * 4096, 5)));
    }
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    EXPECT_TRUE(listing->points.empty());
    for (auto& e : std::filesystem::recursive_directory_iterator(dir.sub("repo/data")))
        EXPECT_FALSE(e.is_regular_file()) << e.path();
    EXPECT_TRUE(std::filesystem::is_empty(dir.sub("repo/tmp")));
    EXPECT_TRUE(std::filesystem::is_empty(dir.sub("repo/locks")));
}

TEST_F(BackupSessionTest, TwoConcurrentBackupsBothSucceed) {
    auto other = open_plain(dir.sub("repo"));
    ASSERT_TRUE(other);
    Bytes a = random_data(300 * 4096, 11), b = random_data(300 * 4096, 12);
    // Both sessions are open (and hold shared locks) at the same time.
    auto s1 = BackupSession::begin(*repo, {.workers = 2});
    auto s2 = BackupSession::begin(**other, {.workers = 2});
    ASSERT_TRUE(s1 && s2);
    auto feed = [](BackupSession& s, const std::string& vm, const Bytes& data) {
        auto disk = s.add_point(vm, "crash").add_disk("vda", data.size(), nullptr);
        ASSERT_TRUE(disk);
        for (std::size_t off = 0; off < data.size(); off += 16 * 4096)
            ASSERT_TRUE((*disk)->write(
                off,
                Bytes(data.begin() + off, data.begin() + std::min(data.size(), off + 16 * 4096))));
    };
    std::thread t1([&] { feed(**s1, "a", a); });
    std::thread t2([&] { feed(**s2, "b", b); });
    t1.join();
    t2.join();
    ASSERT_TRUE((*s1)->commit());
    ASSERT_TRUE((*s2)->commit());
    ASSERT_TRUE(repo->load_index());
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    ASSERT_EQ(listing->points.size(), 2u);
    for (const auto& p : listing->points) {
        auto back = read_disk(*repo, p, "vda");
        ASSERT_TRUE(back) << back.error().message();
        EXPECT_EQ(*back, p.vm == "a" ? a : b);
    }
}

TEST_F(BackupSessionTest, NewerFormatVersionIsRefused) {
    std::string config = dir.sub("repo/config");
    auto bytes = read_file(Env::posix(), config);
    ASSERT_TRUE(bytes);
    std::string text(bytes->begin(), bytes->end());
    auto at = text.find("\"format_version\": ");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, text.find(',', at) - at, "\"format_version\": 99");
    std::filesystem::remove(config);
    ASSERT_TRUE(write_file_atomic(Env::posix(), dir.sub("repo/tmp"), dir.sub("repo"), "config",
                                  as_bytes(text)));
    auto r = open_plain(dir.sub("repo"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::unsupported);
    EXPECT_NE(r.error().message().find("upgrade vmshadow"), std::string::npos);
}

TEST_F(BackupSessionTest, MissingRepositoryIsNotFound) {
    auto r = open_plain(dir.sub("nothing-here"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::not_found);
    EXPECT_NE(r.error().message().find("repo init"), std::string::npos);
}

TEST_F(BackupSessionTest, PointsResolveByIdPrefixAndLatest) {
    auto p1 = backup_bytes(*repo, "web", {{"vda", random_data(4096, 1)}});
    auto p2 = backup_bytes(*repo, "web", {{"vda", random_data(4096, 2)}});
    ASSERT_TRUE(p1 && p2);
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    auto latest = Repository::resolve(*listing, "web@latest");
    ASSERT_TRUE(latest);
    EXPECT_EQ(latest->id, p2->id);
    auto by_prefix = Repository::resolve(*listing, p1->id.hex().substr(0, 10));
    ASSERT_TRUE(by_prefix);
    EXPECT_EQ(by_prefix->id, p1->id);
    EXPECT_FALSE(Repository::resolve(*listing, "nope@latest"));
    EXPECT_FALSE(Repository::resolve(*listing, "ffffffffffff"));
    // A malformed spec is the caller's mistake (exit 2), not a missing point (exit 3).
    EXPECT_EQ(Repository::resolve(*listing, "nope@latest").error().kind(), ErrorKind::not_found);
    EXPECT_EQ(Repository::resolve(*listing, "ffffffffffff").error().kind(), ErrorKind::not_found);
    for (const char* bad : {"@latest", "web@first", "web", "", "FFFF", "12 4"})
        EXPECT_EQ(Repository::resolve(*listing, bad).error().kind(), ErrorKind::invalid_argument)
            << bad;
}

TEST_F(BackupSessionTest, AnnotationsAreAppendedAndListed) {
    auto p = backup_bytes(*repo, "web", {{"vda", random_data(4096, 1)}});
    ASSERT_TRUE(p);
    ASSERT_TRUE(repo->annotate(p->id, "boot_verification", {{"result", "booted"}}));
    ASSERT_TRUE(repo->annotate(p->id, "boot_verification", {{"result", "booted"}}));
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    ASSERT_EQ(listing->points[0].annotations.size(), 2u);
    EXPECT_EQ(listing->points[0].annotations[0].data["result"], "booted");
    EXPECT_EQ(listing->points[0].id, p->id) << "annotations do not change the point";
}

TEST_F(BackupSessionTest, WorkerCountAboveTheCapIsRefusedBeforeAnythingIsWritten) {
    for (unsigned workers : {kMaxWorkers + 1, 100000u, 4294967295u}) {
        SessionOptions so;
        so.workers = workers;
        auto session = BackupSession::begin(*repo, so);
        ASSERT_FALSE(session);
        EXPECT_EQ(session.error().kind(), ErrorKind::invalid_argument);
        auto p = backup_bytes(*repo, "vm", {{"vda", random_data(4 * 4096, 1)}});
        ASSERT_TRUE(p);
        MemorySink sink(4 * 4096);
        ReadOptions ro;
        ro.workers = workers;
        auto st = restore_object(*repo, p->disks[0].map, p->disks[0].size, sink, ro);
        ASSERT_FALSE(st);
        EXPECT_EQ(st.error().kind(), ErrorKind::invalid_argument);
    }
    EXPECT_TRUE(std::filesystem::is_empty(dir.sub("repo") + "/locks"));
}

// In a child whose address space has room for only a few thread stacks, a backup and a restore
// with many workers fail with an I/O error (the thread limit) instead of aborting. Root
// ignores RLIMIT_NPROC, so the address space is what runs out.
TEST_F(BackupSessionTest, ThreadCreationFailureIsAnErrorNotAnAbort) {
    Bytes data = random_data(16 * 4096, 3);
    auto p = backup_bytes(*repo, "vm", {{"vda", data}});
    ASSERT_TRUE(p);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        if (!vmshadow::test::limit_address_space(40ull << 20)) _exit(90);  // a few 8 MiB stacks
        SessionOptions so;
        so.workers = kMaxWorkers;
        auto session = BackupSession::begin(*repo, so);
        if (session) _exit(91);
        if (session.error().kind() != ErrorKind::io) _exit(92);
        MemorySink sink(data.size());
        ReadOptions ro;
        ro.workers = kMaxWorkers;
        auto st = restore_object(*repo, p->disks[0].map, p->disks[0].size, sink, ro);
        if (st) _exit(93);
        if (st.error().kind() != ErrorKind::io) _exit(94);
        if (st.error().message().find("thread") == std::string::npos) _exit(95);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0);
    // The failed session left nothing behind: its lock is gone and the next backup works.
    EXPECT_TRUE(std::filesystem::is_empty(dir.sub("repo") + "/locks"));
    EXPECT_TRUE(backup_bytes(*repo, "vm", {{"vda", data}}, 4));
}

}  // namespace
}  // namespace vmshadow::repo::test
