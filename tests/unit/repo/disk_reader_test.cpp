// SPDX-License-Identifier: MIT
#include "repo/disk_reader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

constexpr std::uint32_t kChunk = 4096;
constexpr std::uint32_t kFanout = 4;  // small, so small disks get several map levels

// Counts blob reads (chunks and map blocks) of the repository it wraps.
class CountingSource final : public BlobSource {
  public:
    explicit CountingSource(const BlobSource& inner) : inner_(inner) {}
    Result<Bytes> read_blob(const Hash256& id) const override {
        ++reads;
        return inner_.read_blob(id);
    }
    mutable std::atomic<int> reads{0};

  private:
    const BlobSource& inner_;
};

// Data, zero runs (holes) of whole chunks and of whole map blocks, and a short last chunk.
Bytes sample_disk() {
    Bytes data = text_data(37 * kChunk + 1234, 7);
    std::fill(data.begin() + 3 * kChunk, data.begin() + 5 * kChunk, 0);   // 2 hole chunks
    std::fill(data.begin() + 8 * kChunk, data.begin() + 24 * kChunk, 0);  // whole blocks
    std::fill(data.begin() + 30 * kChunk + 10, data.begin() + 30 * kChunk + 20, 0);  // not a hole
    return data;
}

class DiskReaderTest : public ::testing::Test {
  protected:
    void SetUp() override {
        InitOptions init;
        init.chunk_size = kChunk;
        init.map_fanout = kFanout;
        ASSERT_TRUE(Repository::init(dir.sub("repo"), init));
        auto r = open_plain(dir.sub("repo"));
        ASSERT_TRUE(r) << r.error().message();
        repo = std::move(*r);
        data = sample_disk();
        auto p = backup_bytes(*repo, "vm", {{"vda", data}});
        ASSERT_TRUE(p) << p.error().message();
        point = *p;
    }
    std::unique_ptr<DiskReader> open(const BlobSource& source, DiskReader::Options o = {}) {
        auto reader = DiskReader::open(source, point.disks[0].map, data.size(), kChunk, kFanout, o);
        EXPECT_TRUE(reader) << reader.error().message();
        return reader ? std::move(*reader) : nullptr;
    }
    TempDir dir;
    std::unique_ptr<Repository> repo;
    Bytes data;
    RestorePoint point;
};

TEST_F(DiskReaderTest, ReadsAnyRangeBitExact) {
    auto reader = DiskReader::open(*repo, point.disks[0], {});
    ASSERT_TRUE(reader) << reader.error().message();
    EXPECT_EQ((*reader)->size(), data.size());
    Bytes all(data.size());
    ASSERT_TRUE((*reader)->read(0, all));
    EXPECT_EQ(all, data);
    std::mt19937 gen(3);
    for (int i = 0; i < 300; ++i) {
        std::uint64_t offset = gen() % data.size();
        std::size_t n = gen() % std::min<std::uint64_t>(3 * kChunk, data.size() - offset + 1);
        Bytes part(n);
        ASSERT_TRUE((*reader)->read(offset, part)) << offset << "+" << n;
        ASSERT_TRUE(std::equal(part.begin(), part.end(), data.begin() + offset))
            << offset << "+" << n;
    }
    Bytes tail(1234);
    ASSERT_TRUE((*reader)->read(data.size() - tail.size(), tail));
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), data.end() - 1234));
}

TEST_F(DiskReaderTest, ReadPastTheEndIsInvalidArgument) {
    auto reader = open(*repo);
    Bytes two(2);
    auto st = reader->read(data.size() - 1, two);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::invalid_argument);
    Bytes none;
    EXPECT_TRUE(reader->read(data.size(), none));
}

TEST_F(DiskReaderTest, ExtentsReportHolesAtChunkGranularity) {
    auto reader = open(*repo);
    auto e = reader->extents(0, data.size());
    ASSERT_TRUE(e) << e.error().message();
    std::vector<DiskExtent> expected{{0, 3 * kChunk, false},
                                     {3 * kChunk, 2 * kChunk, true},
                                     {5 * kChunk, 3 * kChunk, false},
                                     {8 * kChunk, 16 * kChunk, true},
                                     {24 * kChunk, data.size() - 24 * kChunk, false}};
    EXPECT_EQ(*e, expected);
    // A request inside a hole is clamped to the request.
    auto inner = reader->extents(9 * kChunk + 5, 100);
    ASSERT_TRUE(inner);
    EXPECT_EQ(*inner, (std::vector<DiskExtent>{{9 * kChunk + 5, 100, true}}));
    auto hole = reader->is_hole(10);
    ASSERT_TRUE(hole);
    EXPECT_TRUE(*hole);
    EXPECT_FALSE(*reader->is_hole(30));
}

TEST_F(DiskReaderTest, HolesCostNoBlobReads) {
    CountingSource counting(*repo);
    auto reader = open(counting);
    Bytes hole(16 * kChunk);
    ASSERT_TRUE(reader->read(8 * kChunk, hole));
    EXPECT_TRUE(std::all_of(hole.begin(), hole.end(), [](auto b) { return b == 0; }));
    int after_hole = counting.reads;
    EXPECT_LE(after_hole, 3);  // map blocks only: the hole's level-0 blocks are holes themselves
}

TEST_F(DiskReaderTest, SmallReadsOfOneChunkFetchItOnce) {
    CountingSource counting(*repo);
    auto reader = open(counting);
    Bytes piece(512);
    ASSERT_TRUE(reader->read(0, piece));
    int first = counting.reads;
    for (std::uint64_t off = 512; off < kChunk; off += 512) ASSERT_TRUE(reader->read(off, piece));
    EXPECT_EQ(counting.reads, first);
    // The map blocks stay cached too: a neighbouring chunk costs one read.
    ASSERT_TRUE(reader->read(kChunk, piece));
    EXPECT_EQ(counting.reads, first + 1);
}

TEST_F(DiskReaderTest, CachesAreBounded) {
    CountingSource counting(*repo);
    auto reader = open(counting, {.cached_chunks = 1, .cached_map_blocks = 1});
    Bytes piece(16);
    ASSERT_TRUE(reader->read(0, piece));
    ASSERT_TRUE(reader->read(30 * kChunk, piece));
    int before = counting.reads;
    ASSERT_TRUE(reader->read(0, piece));  // evicted: read again
    EXPECT_GT(counting.reads, before);
}

TEST_F(DiskReaderTest, ParallelReadersSeeTheSameBytes) {
    auto reader = open(*repo, {.cached_chunks = 4, .cached_map_blocks = 2});
    std::atomic<int> bad{0};
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            std::mt19937 gen(t);
            for (int i = 0; i < 200; ++i) {
                std::uint64_t offset = gen() % data.size();
                std::size_t n = std::min<std::uint64_t>(gen() % (2 * kChunk), data.size() - offset);
                Bytes part(n);
                if (!reader->read(offset, part) ||
                    !std::equal(part.begin(), part.end(), data.begin() + offset))
                    ++bad;
            }
        });
    threads.clear();
    EXPECT_EQ(bad, 0);
}

// A source whose map blocks are `block_bytes` long and whose chunks are 10 bytes.
class BadSource final : public BlobSource {
  public:
    explicit BadSource(std::size_t block_bytes) : block_bytes_(block_bytes) {}
    Result<Bytes> read_blob(const Hash256& id) const override {
        if (id.bytes[0] == 1) return Bytes(block_bytes_, 2);  // root: ids 0x0202…
        return Bytes(10, 1);
    }

  private:
    std::size_t block_bytes_;
};

TEST_F(DiskReaderTest, DamagedDataIsCorruptionNeverBytes) {
    Hash256 root{};
    root.bytes[0] = 1;
    Bytes out(10);
    BadSource bad_block(10);  // a block of 2 ids must be 64 bytes
    auto r1 = DiskReader::open(bad_block, MapRef{root, 1}, 2 * kChunk, kChunk, kFanout, {});
    ASSERT_TRUE(r1) << r1.error().message();
    auto st = (*r1)->read(0, out);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::corruption);

    BadSource bad_chunk(64);
    auto r2 = DiskReader::open(bad_chunk, MapRef{root, 1}, 2 * kChunk, kChunk, kFanout, {});
    ASSERT_TRUE(r2) << r2.error().message();
    st = (*r2)->read(0, out);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::corruption);
    EXPECT_NE(st.error().message().find("expected 4096"), std::string::npos)
        << st.error().message();

    auto levels = DiskReader::open(bad_chunk, MapRef{root, 3}, 2 * kChunk, kChunk, kFanout, {});
    ASSERT_FALSE(levels);
    EXPECT_EQ(levels.error().kind(), ErrorKind::corruption);
}

TEST_F(DiskReaderTest, EmptyAndAllHoleDisks) {
    auto p = backup_bytes(*repo, "empty", {{"a", Bytes{}}, {"b", Bytes(50 * kChunk, 0)}});
    ASSERT_TRUE(p) << p.error().message();
    auto empty = DiskReader::open(*repo, p->disks[0], {});
    ASSERT_TRUE(empty) << empty.error().message();
    Bytes none;
    EXPECT_TRUE((*empty)->read(0, none));
    auto zeros = DiskReader::open(*repo, p->disks[1], {});
    ASSERT_TRUE(zeros) << zeros.error().message();
    Bytes all(50 * kChunk, 1);
    ASSERT_TRUE((*zeros)->read(0, all));
    EXPECT_TRUE(std::all_of(all.begin(), all.end(), [](auto b) { return b == 0; }));
    auto e = (*zeros)->extents(0, all.size());
    ASSERT_TRUE(e);
    EXPECT_EQ(*e, (std::vector<DiskExtent>{{0, all.size(), true}}));
}

}  // namespace
}  // namespace vmshadow::repo::test
