// SPDX-License-Identifier: MIT
// Frames (format version 2): the new chunks of one write are compressed together, while
// dedup, ids and verification stay per chunk; version 1 repositories are written as before.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "repo/check.h"
#include "repo/format.h"
#include "repo/gc.h"
#include "repo/pack.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

struct PackListing {
    std::map<std::uint32_t, int> versions;  // pack version → packs
    std::vector<BlobEntry> entries;
    std::uint64_t bytes = 0;
};

PackListing list_packs(const Repository& repo) {
    PackListing out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(repo.dir("data"))) {
        if (!e.is_regular_file()) continue;
        auto file = Env::posix().open(e.path().string());
        EXPECT_TRUE(file);
        if (!file) continue;
        std::uint8_t header[8];
        EXPECT_TRUE((*file)->read_at(0, header));
        ++out.versions[get_u32(header + 4)];
        auto entries = read_pack_trailer(**file, repo.codec());
        EXPECT_TRUE(entries) << entries.error().message();
        if (entries) out.entries.insert(out.entries.end(), entries->begin(), entries->end());
        out.bytes += e.file_size();
    }
    return out;
}

std::unique_ptr<Repository> make_repo(const std::string& path, int format_version,
                                      std::uint64_t pack_size = 0, bool encrypt = false) {
    InitOptions init;
    init.chunk_size = 4096;
    init.format_version = format_version;
    init.encrypt = encrypt;
    init.password = "secret";
    init.kdf = ScryptParams{1024, 8, 1};
    EXPECT_TRUE(Repository::init(path, init));
    auto r = open_plain(path, nullptr, pack_size);
    EXPECT_TRUE(r) << r.error().message();
    return r ? std::move(*r) : nullptr;
}

// Writes `data` as one disk in write() calls of `piece` bytes (all at once by default), so
// the chunks of each call form frames of up to format::kFrameBytes.
Result<RestorePoint> backup_whole(Repository& repo, const std::string& vm, const Bytes& data,
                                  unsigned workers, std::size_t piece = 0) {
    auto session = BackupSession::begin(repo, SessionOptions{.workers = workers});
    if (!session) return std::unexpected(session.error());
    auto disk = (*session)->add_point(vm, "crash").add_disk("vda", data.size(), nullptr);
    if (!disk) return std::unexpected(disk.error());
    if (piece == 0) piece = data.size();
    for (std::size_t off = 0; off < data.size(); off += piece) {
        std::size_t n = std::min(piece, data.size() - off);
        if (auto st = (*disk)->write(off, Bytes(data.begin() + off, data.begin() + off + n)); !st)
            return std::unexpected(st.error());
    }
    auto points = (*session)->commit();
    if (!points) return std::unexpected(points.error());
    return points->front();
}

TEST(Frames, NewChunksOfOneWriteShareAFrameAndRoundTripBitExact) {
    for (unsigned workers : {0u, 2u}) {
        for (bool encrypt : {false, true}) {
            TempDir dir;
            auto repo = make_repo(dir.sub("repo"), format::kVersion, 0, encrypt);
            ASSERT_TRUE(repo);
            // 1.5 MiB of compressible data plus a tail shorter than a chunk: one full frame
            // and one partial one ending with the short chunk.
            Bytes data = text_data(3 * format::kFrameBytes / 2 + 1000, 7);
            auto point = backup_whole(*repo, "vm", data, workers);
            ASSERT_TRUE(point) << point.error().message();
            PackListing packs = list_packs(*repo);
            EXPECT_EQ(packs.versions, (std::map<std::uint32_t, int>{{2, 1}}));
            std::map<std::uint64_t, int> members;  // frame offset → data entries
            for (const auto& e : packs.entries)
                if (e.type == format::BlobType::data) {
                    EXPECT_TRUE(e.framed);
                    ++members[e.offset];
                }
            // Text this repetitive has few distinct chunks: what matters is that the stored
            // chunks share frames instead of having one each.
            EXPECT_LT(members.size(), packs.entries.size());
            auto back = read_disk(*repo, *point, "vda", workers);
            ASSERT_TRUE(back) << back.error().message();
            EXPECT_EQ(*back, data);
            auto check = check_repository(*repo, {.read_data = true});
            ASSERT_TRUE(check);
            EXPECT_TRUE(check->ok()) << check->problems.front();
        }
    }
}

TEST(Frames, EndOnAlignedBoundariesWhereverAWriteStarts) {
    TempDir dir;
    auto repo = make_repo(dir.sub("repo"), 2);
    ASSERT_TRUE(repo);
    const std::uint64_t per_frame = repo->frame_chunks();  // 256 chunks of 4 KiB
    ASSERT_EQ(per_frame, 256u);
    // One write of 600 distinct chunks starting at chunk 5: frames hold chunks 5-255,
    // 256-511 and 512-604, the boundaries a restore's tasks use.
    Bytes data = random_data(600 * 4096, 4);
    auto session = BackupSession::begin(*repo, SessionOptions{.workers = 2});
    ASSERT_TRUE(session);
    auto disk = (*session)->add_point("vm", "crash").add_disk("vda", 1000 * 4096, nullptr);
    ASSERT_TRUE(disk);
    ASSERT_TRUE((*disk)->write(5 * 4096, data));
    auto points = (*session)->commit();
    ASSERT_TRUE(points) << points.error().message();
    std::map<std::uint64_t, std::size_t> members;  // frame offset → chunks
    for (const auto& e : list_packs(*repo).entries)
        if (e.type == format::BlobType::data) ++members[e.offset];
    std::multiset<std::size_t> sizes;
    for (const auto& [offset, n] : members) sizes.insert(n);
    EXPECT_EQ(sizes, (std::multiset<std::size_t>{251, 256, 93}));
    auto back = read_disk(*repo, points->front(), "vda", 2);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_TRUE(std::equal(data.begin(), data.end(), back->begin() + 5 * 4096));
}

TEST(Frames, StoreCompressibleDataSmallerThanSingleChunks) {
    TempDir dir;
    auto framed = make_repo(dir.sub("v2"), 2);
    auto single = make_repo(dir.sub("v1"), 1);
    ASSERT_TRUE(framed && single);
    // Distinct, compressible chunks: each seed's text differs everywhere.
    Bytes data;
    for (std::uint32_t seed = 0; seed < 8; ++seed) {
        Bytes part = text_data(256 * 1024, 100 + seed);
        data.insert(data.end(), part.begin(), part.end());
    }
    ASSERT_TRUE(backup_whole(*framed, "vm", data, 2));
    ASSERT_TRUE(backup_whole(*single, "vm", data, 2));
    EXPECT_LT(list_packs(*framed).bytes, list_packs(*single).bytes);
}

TEST(Frames, VersionOneRepositoryIsStillWrittenAsVersionOne) {
    TempDir dir;
    auto repo = make_repo(dir.sub("repo"), 1);
    ASSERT_TRUE(repo);
    EXPECT_EQ(repo->config().format_version, 1);
    Bytes data = text_data(600 * 1024, 3);
    auto point = backup_whole(*repo, "vm", data, 2);
    ASSERT_TRUE(point) << point.error().message();
    PackListing packs = list_packs(*repo);
    EXPECT_EQ(packs.versions, (std::map<std::uint32_t, int>{{1, 1}}));
    for (const auto& e : packs.entries) EXPECT_FALSE(e.framed);
    // Reopened, it is still version 1, and reads back.
    repo.reset();
    auto again = open_plain(dir.sub("repo"));
    ASSERT_TRUE(again);
    ASSERT_TRUE((*again)->load_index());
    EXPECT_EQ((*again)->config().format_version, 1);
    auto back = read_disk(**again, *point, "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, data);
}

TEST(Frames, GcCopiesAFrameForItsLiveChunksAndForgetsTheDeadOnes) {
    TempDir dir;
    auto repo = make_repo(dir.sub("repo"), 2);
    ASSERT_TRUE(repo);
    // Point a: 64 random chunks in writes of 8 (one pack of 8 frames). Point b: the first 4
    // of them (already stored: b adds nothing for them) and 60 new ones. Forgetting a leaves
    // one frame of a's pack partly live: gc copies it and drops the rest.
    Bytes a = random_data(64 * 4096, 1);
    Bytes b(a.begin(), a.begin() + 4 * 4096);
    Bytes fresh = random_data(60 * 4096, 2);
    b.insert(b.end(), fresh.begin(), fresh.end());
    auto pa = backup_whole(*repo, "a", a, 0, 8 * 4096);
    auto pb = backup_whole(*repo, "b", b, 0);
    ASSERT_TRUE(pa && pb);
    Hash256 dead_in_live_frame = repo->codec().id_of(ByteView(a).subspan(6 * 4096, 4096));
    ASSERT_TRUE(repo->index().contains(dead_in_live_frame));
    ASSERT_TRUE(repo->forget({pa->id}));
    auto report = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_EQ(report->packs_rewritten, 1u);
    EXPECT_GE(report->blobs_dead, 60u);
    EXPECT_FALSE(repo->index().contains(dead_in_live_frame));
    auto back = read_disk(*repo, *pb, "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, b);
    auto check = check_repository(*repo, {.read_data = true});
    ASSERT_TRUE(check);
    EXPECT_TRUE(check->ok()) << check->problems.front();
}

TEST(Frames, FlippedByteInAFrameIsNamedNeverRestoredAsData) {
    TempDir dir;
    auto repo = make_repo(dir.sub("repo"), 2);
    ASSERT_TRUE(repo);
    Bytes data = text_data(512 * 1024, 9);
    auto point = backup_whole(*repo, "vm", data, 0);
    ASSERT_TRUE(point);
    std::string pack;
    for (const auto& e : std::filesystem::recursive_directory_iterator(repo->dir("data")))
        if (e.is_regular_file()) pack = e.path().string();
    ASSERT_FALSE(pack.empty());
    {
        // A byte inside the first stored frame (just after the 8-byte header).
        std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(20);
        char c = 0;
        f.read(&c, 1);
        c ^= 0x5a;
        f.seekp(20);
        f.write(&c, 1);
    }
    auto reopened = open_plain(dir.sub("repo"));
    ASSERT_TRUE(reopened);
    ASSERT_TRUE((*reopened)->load_index());
    auto back = read_disk(**reopened, *point, "vda");
    ASSERT_FALSE(back);
    EXPECT_EQ(back.error().kind(), ErrorKind::corruption);
    EXPECT_NE(back.error().message().find("pack"), std::string::npos) << back.error().message();
    auto check = check_repository(**reopened, {.read_data = true});
    ASSERT_TRUE(check);
    EXPECT_FALSE(check->ok());
    EXPECT_FALSE(check->damaged_points.empty());
}

TEST(Frames, EntryPointingOutsideItsFrameIsNotSane) {
    BlobEntry e;
    e.framed = true;
    e.frame_length = 4096;
    e.frame_offset = 4000;
    e.raw_length = 200;
    EXPECT_FALSE(entry_is_sane(e));
    e.raw_length = 96;
    EXPECT_TRUE(entry_is_sane(e));
    e.frame_length = format::kMaxFrameBytes + 1;
    EXPECT_FALSE(entry_is_sane(e));
}

}  // namespace
}  // namespace vmshadow::repo::test
