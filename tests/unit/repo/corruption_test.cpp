// SPDX-License-Identifier: MIT
// Damaged files are detected by `check` and by restore, named in the error, and never turn
// into a crash or a wrong restored byte.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "repo/check.h"
#include "repo/format.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;

class CorruptionTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path = dir.sub("repo");
        InitOptions init;
        init.chunk_size = 4096;
        init.map_fanout = 4;
        ASSERT_TRUE(Repository::init(path, init));
        auto r = open_plain(path, nullptr, 16 * 1024);
        ASSERT_TRUE(r);
        for (std::string vm : {"a", "b"}) {
            Bytes data = text_data(10 * 4096, vm[0]);
            Bytes noise = random_data(3 * 4096, vm[0] + 1);
            std::copy(noise.begin(), noise.end(), data.begin() + 4096);
            auto p = backup_bytes(**r, vm, {{"vda", data}});
            ASSERT_TRUE(p);
            expected[p->id] = data;
        }
    }

    // Every file of the kinds the issue lists: packs, index files, commit records.
    std::vector<std::string> damageable_files() const {
        std::vector<std::string> out;
        for (const char* sub : {"data", "index", "commits"})
            for (auto& e : fs::recursive_directory_iterator(path + "/" + sub))
                if (e.is_regular_file()) out.push_back(e.path());
        return out;
    }

    static void flip(const std::string& file, std::uint64_t offset) {
        std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(static_cast<std::streamoff>(offset));
        char c;
        f.get(c);
        f.seekp(static_cast<std::streamoff>(offset));
        f.put(static_cast<char>(c ^ 0x5a));
    }

    // Restores every point: each either fails with an error or is bit-exact.
    // Returns how many failed.
    int restore_all(const std::string& context) {
        auto repo = open_plain(path);
        if (!repo) return 100;
        std::vector<Error> damaged;
        EXPECT_TRUE((*repo)->load_index(&damaged));
        auto listing = (*repo)->list_points();
        if (!listing) return 100;
        int failures = static_cast<int>(expected.size() - listing->points.size());
        for (const auto& p : listing->points) {
            auto back = read_disk(**repo, p, "vda");
            if (!back) {
                ++failures;
                EXPECT_EQ(back.error().kind(), ErrorKind::corruption)
                    << context << ": " << back.error().message();
                continue;
            }
            auto it = expected.find(p.id);
            EXPECT_TRUE(it != expected.end()) << context << ": unknown point appeared";
            if (it != expected.end()) {
                EXPECT_TRUE(*back == it->second) << context << ": WRONG BYTES";
            }
        }
        return failures;
    }

    CheckReport check(bool read_data) {
        auto repo = open_plain(path);
        EXPECT_TRUE(repo);
        CheckOptions o;
        o.read_data = read_data;
        auto report = check_repository(**repo, o);
        EXPECT_TRUE(report);
        return report ? *report : CheckReport{};
    }

    TempDir dir;
    std::string path;
    std::map<Hash256, Bytes> expected;
};

TEST_F(CorruptionTest, CleanRepositoryChecksClean) {
    EXPECT_TRUE(check(true).ok());
    EXPECT_EQ(restore_all("clean"), 0);
}

TEST_F(CorruptionTest, EveryFlippedByteIsDetectedAndNeverRestoredWrong) {
    int flips = 0;
    for (const auto& file : damageable_files()) {
        std::uint64_t size = fs::file_size(file);
        // Every header byte, then a spread of positions through the file, and the last bytes.
        std::vector<std::uint64_t> offsets;
        for (std::uint64_t o = 0; o < std::min<std::uint64_t>(size, 12); ++o) offsets.push_back(o);
        for (std::uint64_t o = 12; o < size; o += std::max<std::uint64_t>(1, size / 23))
            offsets.push_back(o);
        for (std::uint64_t o = size > 12 ? size - 12 : 0; o < size; ++o) offsets.push_back(o);
        for (auto off : offsets) {
            std::string context = file + " byte " + std::to_string(off);
            flip(file, off);
            CheckReport report = check(true);
            EXPECT_FALSE(report.ok()) << context << ": check --read-data missed it";
            restore_all(context);
            flip(file, off);  // undo
            ++flips;
        }
    }
    EXPECT_GT(flips, 100);
    EXPECT_TRUE(check(true).ok());
}

TEST_F(CorruptionTest, DamagedChunkNamesChunkPackAndPoint) {
    // Damage the middle of the largest pack's first blob.
    std::string pack;
    for (const auto& f : damageable_files())
        if (f.find("/data/") != std::string::npos &&
            (pack.empty() || fs::file_size(f) > fs::file_size(pack)))
            pack = f;
    ASSERT_FALSE(pack.empty());
    flip(pack, format::kPackHeaderSize + 10);
    auto repo = open_plain(path);
    ASSERT_TRUE(repo && (*repo)->load_index());
    auto listing = (*repo)->list_points();
    ASSERT_TRUE(listing);
    int failed = 0;
    for (const auto& p : listing->points) {
        auto back = read_disk(**repo, p, "vda");
        if (back) continue;
        ++failed;
        EXPECT_EQ(back.error().kind(), ErrorKind::corruption);
        EXPECT_NE(back.error().message().find("chunk "), std::string::npos)
            << back.error().message();
        EXPECT_NE(back.error().message().find(fs::path(pack).filename().string()),
                  std::string::npos)
            << back.error().message();
    }
    EXPECT_GE(failed, 1);
    CheckReport report = check(true);
    ASSERT_FALSE(report.ok());
    ASSERT_FALSE(report.damaged_points.empty());
    bool named = false;
    for (const auto& p : listing->points)
        for (const auto& d : report.damaged_points) named |= d.starts_with(p.id.hex());
    EXPECT_TRUE(named);
}

TEST_F(CorruptionTest, TruncatedPackIsFoundWithoutReadingData) {
    for (const auto& f : damageable_files())
        if (f.find("/data/") != std::string::npos) {
            fs::resize_file(f, fs::file_size(f) / 2);
            break;
        }
    CheckReport report = check(false);
    EXPECT_FALSE(report.ok());
    EXPECT_NE(report.problems.front().find("pack"), std::string::npos) << report.problems.front();
    EXPECT_GE(restore_all("truncated pack"), 1);
}

TEST_F(CorruptionTest, TruncatedIndexAndCommitAreNamed) {
    std::string index, commit;
    for (const auto& f : damageable_files()) {
        if (f.find("/index/") != std::string::npos) index = f;
        if (f.find("/commits/") != std::string::npos) commit = f;
    }
    fs::resize_file(index, 20);
    fs::resize_file(commit, fs::file_size(commit) - 1);
    auto repo = open_plain(path);
    ASSERT_TRUE(repo);
    auto loaded = (*repo)->load_index();
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.error().message().find(fs::path(index).filename().string()),
              std::string::npos);
    auto listing = (*repo)->list_points();
    ASSERT_TRUE(listing);
    ASSERT_EQ(listing->damaged.size(), 1u);
    EXPECT_NE(listing->damaged[0].message().find(fs::path(commit).filename().string()),
              std::string::npos);
    CheckReport report = check(false);
    EXPECT_GE(report.problems.size(), 2u);
}

}  // namespace
}  // namespace vmshadow::repo::test
