// SPDX-License-Identifier: MIT
// restore_object: runs of consecutive data chunks become one write of at most max_write bytes,
// holes are never written, and every byte is still verified (a damaged chunk inside a run fails
// the restore and nothing of that run reaches the sink).
#include "repo/restore.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <vector>

#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

constexpr std::uint64_t kChunk = 4096;

// Records every write, and the bytes at their offsets.
class RecordingSink final : public DiskSink {
  public:
    explicit RecordingSink(std::uint64_t size) : data(size) {}
    Status write(std::uint64_t offset, ByteView d) override {
        std::lock_guard lock(mu);
        writes.emplace_back(offset, d.size());
        std::memcpy(data.data() + offset, d.data(), d.size());
        return {};
    }
    std::mutex mu;
    Bytes data;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> writes;
};

class RestoreTest : public ::testing::Test {
  protected:
    void SetUp() override {
        InitOptions init;
        init.chunk_size = kChunk;
        init.map_fanout = 8;
        ASSERT_TRUE(Repository::init(dir.sub("repo"), init));
        auto r = open_plain(dir.sub("repo"));
        ASSERT_TRUE(r) << r.error().message();
        repo = std::move(*r);
    }
    // 53 chunks and a 100-byte tail: data runs of 1, 5, 20 and 2 chunks (plus the tail)
    // between holes.
    Bytes disk_data() {
        Bytes data = text_data(53 * kChunk + 100, 7);
        auto hole = [&](std::uint64_t first, std::uint64_t n) {
            std::fill(data.begin() + first * kChunk, data.begin() + (first + n) * kChunk, 0);
        };
        hole(1, 2);    // data 0 | holes 1-2 | data 3-7
        hole(8, 4);    // holes 8-11 | data 12-31
        hole(32, 19);  // holes 32-50 | data 51-52 + tail
        return data;
    }
    TempDir dir;
    std::unique_ptr<Repository> repo;
};

TEST_F(RestoreTest, RunsOfDataChunksAreWrittenAsLargeWritesAndHolesAreSkipped) {
    Bytes data = disk_data();
    auto p = backup_bytes(*repo, "vm", {{"vda", data}});
    ASSERT_TRUE(p) << p.error().message();
    const DiskRecord* d = p->disk("vda");
    ASSERT_NE(d, nullptr);
    for (unsigned workers : {0u, 1u, 4u}) {
        for (std::size_t max_write : {std::size_t{0}, std::size_t{3 * kChunk},
                                      std::size_t{8 * kChunk + 17}, std::size_t{1} << 20}) {
            RecordingSink sink(d->size);
            ReadOptions ro;
            ro.workers = workers;
            ro.max_write = max_write;
            ASSERT_TRUE(restore_object(*repo, d->map, d->size, sink, ro));
            EXPECT_EQ(sink.data, data) << "workers " << workers << " max_write " << max_write;
            std::uint64_t limit = std::max<std::uint64_t>(kChunk, max_write / kChunk * kChunk);
            std::uint64_t written = 0;
            for (auto [offset, length] : sink.writes) {
                EXPECT_EQ(offset % kChunk, 0u);
                EXPECT_LE(length, limit);
                for (std::uint64_t at = offset; at < offset + length; at += kChunk) {
                    std::uint64_t c = at / kChunk;
                    EXPECT_FALSE((c >= 1 && c <= 2) || (c >= 8 && c <= 11) || (c >= 32 && c <= 50))
                        << "hole chunk " << c << " was written";
                }
                written += length;
            }
            EXPECT_EQ(written, (1 + 5 + 20 + 2) * kChunk + 100);
            if (max_write >= (1u << 20)) {  // one write per run of data
                EXPECT_EQ(sink.writes.size(), 4u);
            }
        }
    }
}

TEST_F(RestoreTest, ADamagedChunkInsideARunFailsTheRestoreAndIsNeverWritten) {
    Bytes data = disk_data();
    auto p = backup_bytes(*repo, "vm", {{"vda", data}});
    ASSERT_TRUE(p) << p.error().message();
    const DiskRecord* d = p->disk("vda");
    // Damage one stored blob: flip a byte in the middle of the largest pack file's blobs.
    std::string pack;
    std::uintmax_t largest = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir.sub("repo") + "/data"))
        if (e.is_regular_file() && e.file_size() > largest) {
            largest = e.file_size();
            pack = e.path().string();
        }
    ASSERT_FALSE(pack.empty());
    {
        std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(100);
        char c = 0;
        f.read(&c, 1);
        c = static_cast<char>(c ^ 0x5a);
        f.seekp(100);
        f.write(&c, 1);
    }
    auto r = open_plain(dir.sub("repo"));  // no cached file handles or blobs
    ASSERT_TRUE(r);
    ASSERT_TRUE((*r)->load_index());
    for (unsigned workers : {0u, 3u}) {
        RecordingSink sink(d->size);
        ReadOptions ro;
        ro.workers = workers;
        ro.max_write = 1u << 20;
        Status st = restore_object(**r, d->map, d->size, sink, ro);
        ASSERT_FALSE(st) << "workers " << workers;
        EXPECT_EQ(st.error().kind(), ErrorKind::corruption) << st.error().message();
        // Whatever was written is exactly the original bytes: nothing unverified got through.
        for (auto [offset, length] : sink.writes)
            EXPECT_TRUE(std::equal(sink.data.begin() + offset, sink.data.begin() + offset + length,
                                   data.begin() + offset))
                << "write at " << offset;
    }
}

}  // namespace
}  // namespace vmshadow::repo::test
