// SPDX-License-Identifier: MIT
#include "export/overlay.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit/repo/repo_test_util.h"

namespace vmshadow::exporter {
namespace {

using repo::Bytes;
using repo::DiskExtent;
using repo::DiskReader;
using repo::test::TempDir;

constexpr std::uint32_t kChunk = 4096;

class OverlayTest : public ::testing::Test {
  protected:
    void SetUp() override {
        repo::InitOptions init;
        init.chunk_size = kChunk;
        init.map_fanout = 4;
        ASSERT_TRUE(repo::Repository::init(dir.sub("repo"), init));
        auto r = repo::test::open_plain(dir.sub("repo"));
        ASSERT_TRUE(r) << r.error().message();
        repository = std::move(*r);
        data = repo::test::text_data(20 * kChunk + 100, 11);
        std::fill(data.begin() + 4 * kChunk, data.begin() + 12 * kChunk, 0);  // holes
        auto p = repo::test::backup_bytes(*repository, "vm", {{"vda", data}});
        ASSERT_TRUE(p) << p.error().message();
        point = *p;
        auto reader = DiskReader::open(*repository, point.disks[0], {});
        ASSERT_TRUE(reader) << reader.error().message();
        base = std::move(*reader);
    }
    std::unique_ptr<OverlayDisk> open(const std::string& name = "p/vda") {
        auto o = OverlayDisk::open(*base, dir.sub("overlay"), name);
        EXPECT_TRUE(o) << o.error().message();
        return o ? std::move(*o) : nullptr;
    }
    Bytes read_all(OverlayDisk& disk) {
        Bytes out(disk.size());
        EXPECT_TRUE(disk.read(0, out));
        return out;
    }
    TempDir dir;
    std::unique_ptr<repo::Repository> repository;
    Bytes data;
    repo::RestorePoint point;
    std::unique_ptr<DiskReader> base;
};

TEST_F(OverlayTest, WithoutOverlayTheDiskIsReadOnly) {
    auto o = OverlayDisk::open(*base, "", "p/vda");
    ASSERT_TRUE(o);
    EXPECT_FALSE((*o)->writable());
    EXPECT_EQ(read_all(**o), data);
    Bytes one(1, 7);
    auto st = (*o)->write(0, one);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::unsupported);
}

TEST_F(OverlayTest, WritesReadBackAndNeverReachTheRepository) {
    auto disk = open();
    ASSERT_TRUE(disk->writable());
    Bytes expected = data;
    // A write inside one chunk, one across a chunk boundary, one into a hole, a full chunk.
    auto put = [&](std::uint64_t offset, Bytes bytes) {
        ASSERT_TRUE(disk->write(offset, bytes));
        std::copy(bytes.begin(), bytes.end(), expected.begin() + offset);
    };
    put(100, Bytes(50, 0xAA));
    put(2 * kChunk - 10, Bytes(30, 0xBB));
    put(6 * kChunk + 7, Bytes(9, 0xCC));
    put(14 * kChunk, Bytes(kChunk, 0xDD));
    put(data.size() - 3, Bytes(3, 0xEE));  // the short last chunk
    EXPECT_EQ(read_all(*disk), expected);
    EXPECT_EQ(disk->overlay_chunks(), 6u);
    Bytes piece(kChunk + 20);
    ASSERT_TRUE(disk->read(2 * kChunk - 10, piece));
    EXPECT_TRUE(std::equal(piece.begin(), piece.end(), expected.begin() + 2 * kChunk - 10));
    ASSERT_TRUE(disk->flush());
    // The repository still holds the original.
    auto fresh = DiskReader::open(*repository, point.disks[0], {});
    ASSERT_TRUE(fresh);
    Bytes original(data.size());
    ASSERT_TRUE((*fresh)->read(0, original));
    EXPECT_EQ(original, data);
    Bytes past(2);
    EXPECT_FALSE(disk->write(data.size() - 1, past));
}

TEST_F(OverlayTest, ExtentsShowWrittenHolesAsData) {
    auto disk = open();
    ASSERT_TRUE(disk->write(6 * kChunk + 1, Bytes(1, 1)));
    auto e = disk->extents(0, data.size());
    ASSERT_TRUE(e) << e.error().message();
    std::vector<DiskExtent> expected{{0, 4 * kChunk, false},
                                     {4 * kChunk, 2 * kChunk, true},
                                     {6 * kChunk, kChunk, false},
                                     {7 * kChunk, 5 * kChunk, true},
                                     {12 * kChunk, data.size() - 12 * kChunk, false}};
    EXPECT_EQ(*e, expected);
}

TEST_F(OverlayTest, SurvivesReopenAndRefusesAnotherBase) {
    {
        auto disk = open();
        ASSERT_TRUE(disk->write(kChunk + 5, Bytes(5, 0x55)));
        ASSERT_TRUE(disk->flush());
    }
    {
        auto disk = open();
        Bytes got(5);
        ASSERT_TRUE(disk->read(kChunk + 5, got));
        EXPECT_EQ(got, Bytes(5, 0x55));
        EXPECT_EQ(disk->overlay_chunks(), 1u);
    }
    auto other = OverlayDisk::open(*base, dir.sub("overlay"), "q/vda");
    ASSERT_FALSE(other);
    EXPECT_EQ(other.error().kind(), ErrorKind::conflict);
    EXPECT_NE(other.error().message().find("was made for p/vda"), std::string::npos)
        << other.error().message();
}

// Instant recovery restarts a server that was killed: the writes it acknowledged (no flush
// since) must still be there for the next one.
TEST_F(OverlayTest, WritesOfAKilledServerSurviveWithoutAFlush) {
    pid_t child = ::fork();
    ASSERT_NE(child, -1);
    if (child == 0) {
        auto o = OverlayDisk::open(*base, dir.sub("overlay"), "p/vda");
        bool ok = o && (*o)->write(kChunk + 5, Bytes(5, 0x55)) &&
                  (*o)->write(7 * kChunk, Bytes(kChunk, 0x66)) &&
                  (*o)->write(kChunk + 100, Bytes(3, 0x77));
        ::_exit(ok ? 0 : 1);  // no flush, no destructor: as if killed
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    auto disk = open();
    Bytes expected = data;
    std::fill_n(expected.begin() + kChunk + 5, 5, 0x55);
    std::fill_n(expected.begin() + 7 * kChunk, kChunk, 0x66);
    std::fill_n(expected.begin() + kChunk + 100, 3, 0x77);
    EXPECT_EQ(read_all(*disk), expected);
    EXPECT_EQ(disk->overlay_chunks(), 2u);
}

TEST_F(OverlayTest, OverlayFileStaysSparse) {
    auto disk = open();
    ASSERT_TRUE(disk->write(15 * kChunk, Bytes(kChunk, 0)));  // a chunk of zeros: a hole
    ASSERT_TRUE(disk->write(16 * kChunk, Bytes(10, 9)));
    ASSERT_TRUE(disk->flush());
    struct stat st {};
    ASSERT_EQ(::stat(dir.sub("overlay").c_str(), &st), 0);
    EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), data.size());
    EXPECT_LE(static_cast<std::uint64_t>(st.st_blocks) * 512, 2u * kChunk);
    Bytes z(kChunk, 1);
    ASSERT_TRUE(disk->read(15 * kChunk, z));
    EXPECT_EQ(z, Bytes(kChunk, 0));
}

TEST_F(OverlayTest, DamagedMapIsRefused) {
    { open(); }
    {
        FILE* f = std::fopen(dir.sub("overlay.map").c_str(), "r+b");
        ASSERT_NE(f, nullptr);
        std::fputs("XXXX", f);
        std::fclose(f);
    }
    auto o = OverlayDisk::open(*base, dir.sub("overlay"), "p/vda");
    ASSERT_FALSE(o);
    EXPECT_EQ(o.error().kind(), ErrorKind::corruption);
}

}  // namespace
}  // namespace vmshadow::exporter
