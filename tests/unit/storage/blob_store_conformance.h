// SPDX-License-Identifier: MIT
#pragma once
// The blob-store conformance suite: the guarantees storage/blob_store.h states, checked the
// same way on every backend (restic runs one suite against each of its backends).
//
// A backend instantiates it with a ConformanceBackend whose `make` returns a fresh, empty
// store for one test; the shared_ptr's deleter removes everything the test stored (a temp
// folder, or every object under a unique S3 prefix), so a failing test still cleans up:
//
//   INSTANTIATE_TEST_SUITE_P(Local, BlobStoreConformance,
//                            ::testing::Values(ConformanceBackend{"local", make_local, 9 << 20}),
//                            conformance_backend_name);

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "storage/blob_store.h"

namespace vmshadow::storage::conformance {

struct ConformanceBackend {
    std::string name;
    std::function<std::shared_ptr<BlobStore>()> make;
    // Big enough that put_file goes multipart on a backend that has parts (S3: > part_size).
    std::uint64_t large_object_size = 9ULL << 20;
    // Non-empty when the backend cannot be tested here (no gateway configured): skipped.
    std::function<std::string()> skip_reason;
};

// gtest prints the parameter in failure lines: the name, not the struct's bytes.
inline void PrintTo(const ConformanceBackend& backend, std::ostream* out) {
    *out << backend.name;
}

inline std::string conformance_backend_name(
    const ::testing::TestParamInfo<ConformanceBackend>& info) {
    return info.param.name;
}

inline std::vector<std::uint8_t> pattern_bytes(std::size_t size, std::uint32_t seed) {
    std::vector<std::uint8_t> out(size);
    std::mt19937 random(seed);
    for (auto& b : out) b = static_cast<std::uint8_t>(random());
    return out;
}

inline ByteView view(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A local file removed when the test ends.
class TempFile {
  public:
    explicit TempFile(const std::vector<std::uint8_t>& content) {
        path_ = (std::filesystem::temp_directory_path() /
                 ("vmshadow-conformance-" + std::to_string(::getpid()) + "-" +
                  std::to_string(counter()++)))
                    .string();
        std::ofstream out(path_, std::ios::binary);
        out.write(reinterpret_cast<const char*>(content.data()),
                  static_cast<std::streamsize>(content.size()));
    }
    ~TempFile() { std::filesystem::remove(path_); }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    const std::string& path() const { return path_; }

  private:
    static std::atomic<int>& counter() {
        static std::atomic<int> n{0};
        return n;
    }
    std::string path_;
};

class BlobStoreConformance : public ::testing::TestWithParam<ConformanceBackend> {
  protected:
    void SetUp() override {
        if (GetParam().skip_reason) {
            if (auto reason = GetParam().skip_reason(); !reason.empty()) GTEST_SKIP() << reason;
        }
        store_ = GetParam().make();
        ASSERT_NE(store_, nullptr);
    }
    void TearDown() override { store_.reset(); }

    BlobStore& store() { return *store_; }

    std::vector<std::uint8_t> must_get(const std::string& key) {
        auto got = store_->get(key);
        EXPECT_TRUE(got.has_value()) << (got ? "" : got.error().message());
        return got ? *got : std::vector<std::uint8_t>{};
    }

    std::vector<std::string> keys(const std::string& prefix) {
        auto listed = store_->list(prefix);
        EXPECT_TRUE(listed.has_value()) << (listed ? "" : listed.error().message());
        std::vector<std::string> out;
        if (listed)
            for (auto& info : *listed) out.push_back(info.key);
        return out;
    }

    std::shared_ptr<BlobStore> store_;
};

TEST_P(BlobStoreConformance, PutThenGetReturnsTheSameBytes) {
    auto data = pattern_bytes(100'000, 1);
    ASSERT_TRUE(store().put("a/b/c", data));
    EXPECT_EQ(must_get("a/b/c"), data);
}

TEST_P(BlobStoreConformance, EmptyObjectRoundTrips) {
    ASSERT_TRUE(store().put("empty", {}));
    EXPECT_TRUE(must_get("empty").empty());
    auto info = store().stat("empty");
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->size, 0u);
}

TEST_P(BlobStoreConformance, PutReplacesAnExistingObjectWhole) {
    ASSERT_TRUE(store().put("k", pattern_bytes(5000, 2)));
    auto second = pattern_bytes(300, 3);
    ASSERT_TRUE(store().put("k", second));
    EXPECT_EQ(must_get("k"), second);
}

TEST_P(BlobStoreConformance, PutFileStoresTheFileContent) {
    auto data = pattern_bytes(70'000, 4);
    TempFile file(data);
    ASSERT_TRUE(store().put_file("files/one", file.path()));
    EXPECT_EQ(must_get("files/one"), data);
}

TEST_P(BlobStoreConformance, LargePutFileRoundTripsAndReadsRangesAcrossParts) {
    auto data = pattern_bytes(GetParam().large_object_size, 5);
    TempFile file(data);
    auto stored = store().put_file("large/object", file.path());
    ASSERT_TRUE(stored) << stored.error().message();
    auto info = store().stat("large/object");
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->size, data.size());
    EXPECT_EQ(must_get("large/object"), data);
    // A range that straddles a 5 MiB part boundary.
    std::vector<std::uint8_t> range(1 << 20);
    std::uint64_t offset = (5ULL << 20) - 1000;
    ASSERT_TRUE(store().read_at("large/object", offset, range));
    EXPECT_TRUE(std::equal(range.begin(), range.end(), data.begin() + offset));
}

TEST_P(BlobStoreConformance, LargePutFromMemoryRoundTrips) {
    auto data = pattern_bytes(GetParam().large_object_size, 6);
    auto stored = store().put("large/memory", data);
    ASSERT_TRUE(stored) << stored.error().message();
    EXPECT_EQ(must_get("large/memory"), data);
}

TEST_P(BlobStoreConformance, PutFileOfAMissingLocalFileFailsAndStoresNothing) {
    auto stored = store().put_file("nofile", "/nonexistent/vmshadow-conformance-missing");
    ASSERT_FALSE(stored);
    EXPECT_EQ(store().stat("nofile").error().kind(), ErrorKind::not_found);
}

TEST_P(BlobStoreConformance, ReadAtReturnsExactlyTheRangeAskedFor) {
    auto data = pattern_bytes(10'000, 7);
    ASSERT_TRUE(store().put("r", data));
    struct Case {
        std::uint64_t offset;
        std::size_t length;
    };
    for (auto c : {Case{0, 1}, Case{0, 10'000}, Case{1234, 4321}, Case{9'999, 1}, Case{5000, 0},
                   Case{10'000, 0}}) {
        std::vector<std::uint8_t> out(c.length);
        auto read = store().read_at("r", c.offset, out);
        ASSERT_TRUE(read) << c.offset << "+" << c.length << ": " << read.error().message();
        EXPECT_TRUE(std::equal(out.begin(), out.end(), data.begin() + c.offset))
            << c.offset << "+" << c.length;
    }
}

TEST_P(BlobStoreConformance, ReadAtPastTheEndIsCorruption) {
    ASSERT_TRUE(store().put("short", pattern_bytes(100, 8)));
    std::vector<std::uint8_t> out(50);
    auto straddles = store().read_at("short", 80, out);
    ASSERT_FALSE(straddles);
    EXPECT_EQ(straddles.error().kind(), ErrorKind::corruption) << straddles.error().message();
    auto beyond = store().read_at("short", 200, out);
    ASSERT_FALSE(beyond);
    EXPECT_EQ(beyond.error().kind(), ErrorKind::corruption) << beyond.error().message();
}

TEST_P(BlobStoreConformance, StatGivesSizeAndARecentModificationTime) {
    ASSERT_TRUE(store().put("s/t", pattern_bytes(777, 9)));
    auto info = store().stat("s/t");
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->key, "s/t");
    EXPECT_EQ(info->size, 777u);
    auto now = static_cast<std::int64_t>(::time(nullptr));
    EXPECT_LT(std::abs(info->modified - now), 600) << "the store's clock is off by minutes";
}

TEST_P(BlobStoreConformance, MissingKeysAreNotFound) {
    EXPECT_EQ(store().get("missing/key").error().kind(), ErrorKind::not_found);
    EXPECT_EQ(store().stat("missing/key").error().kind(), ErrorKind::not_found);
    std::vector<std::uint8_t> out(10);
    EXPECT_EQ(store().read_at("missing/key", 0, out).error().kind(), ErrorKind::not_found);
    EXPECT_TRUE(store().remove("missing/key")) << "remove of a missing key succeeds";
    EXPECT_TRUE(keys("missing/").empty());
}

TEST_P(BlobStoreConformance, AFolderPrefixOfAKeyIsNoObject) {
    ASSERT_TRUE(store().put("dir/inner", pattern_bytes(10, 10)));
    EXPECT_EQ(store().stat("dir").error().kind(), ErrorKind::not_found);
    EXPECT_EQ(store().get("dir").error().kind(), ErrorKind::not_found);
}

TEST_P(BlobStoreConformance, ErrorsNameTheStoreAndTheKey) {
    auto got = store().get("missing/named");
    ASSERT_FALSE(got);
    EXPECT_NE(got.error().message().find(store().location()), std::string::npos)
        << got.error().message();
    EXPECT_NE(got.error().message().find("missing/named"), std::string::npos)
        << got.error().message();
}

TEST_P(BlobStoreConformance, ListIsSortedWithSizesAndFilteredByPrefix) {
    for (std::string key : {"index/b", "index/a", "index2", "data/00/x", "data/01/y", "config"})
        ASSERT_TRUE(store().put(key, view(key)));
    EXPECT_EQ(keys("index/"), (std::vector<std::string>{"index/a", "index/b"}));
    EXPECT_EQ(keys("index"), (std::vector<std::string>{"index/a", "index/b", "index2"}));
    EXPECT_EQ(keys("data/"), (std::vector<std::string>{"data/00/x", "data/01/y"}));
    EXPECT_EQ(keys("data/0"), (std::vector<std::string>{"data/00/x", "data/01/y"}));
    EXPECT_EQ(keys(""), (std::vector<std::string>{"config", "data/00/x", "data/01/y", "index/a",
                                                  "index/b", "index2"}));
    EXPECT_TRUE(keys("nothing/").empty());
    auto listed = store().list("data/01/");
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_EQ((*listed)[0].size, std::string("data/01/y").size());
    EXPECT_GT((*listed)[0].modified, 0);
}

TEST_P(BlobStoreConformance, ListOfManyKeysIsCompleteAcrossPages) {
    constexpr int kKeys = 1100;  // S3 answers at most 1000 keys a page
    std::atomic<int> next{0};
    std::atomic<int> failures{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 8; ++t)
        workers.emplace_back([&] {
            for (int i = next++; i < kKeys; i = next++) {
                char key[32];
                std::snprintf(key, sizeof key, "many/%05d", i);
                if (!store().put(key, view(key))) ++failures;
            }
        });
    for (auto& w : workers) w.join();
    ASSERT_EQ(failures.load(), 0);
    auto listed = keys("many/");
    ASSERT_EQ(listed.size(), static_cast<std::size_t>(kKeys));
    EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end()));
    EXPECT_EQ(std::adjacent_find(listed.begin(), listed.end()), listed.end()) << "duplicates";
}

TEST_P(BlobStoreConformance, RemoveMakesTheKeyDisappearFromGetAndList) {
    ASSERT_TRUE(store().put("gone/x", pattern_bytes(10, 11)));
    ASSERT_TRUE(store().put("gone/y", pattern_bytes(10, 12)));
    ASSERT_TRUE(store().remove("gone/x"));
    EXPECT_EQ(store().get("gone/x").error().kind(), ErrorKind::not_found);
    EXPECT_EQ(keys("gone/"), std::vector<std::string>{"gone/y"});
}

TEST_P(BlobStoreConformance, IfAbsentOntoAnExistingKeyIsConflictAndKeepsTheContent) {
    auto first = pattern_bytes(100, 13);
    ASSERT_TRUE(store().put("lock", first, PutOptions{.if_absent = true}));
    auto second = store().put("lock", pattern_bytes(100, 14), PutOptions{.if_absent = true});
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().kind(), ErrorKind::conflict) << second.error().message();
    TempFile file(pattern_bytes(100, 15));
    auto third = store().put_file("lock", file.path(), PutOptions{.if_absent = true});
    ASSERT_FALSE(third);
    EXPECT_EQ(third.error().kind(), ErrorKind::conflict) << third.error().message();
    EXPECT_EQ(must_get("lock"), first);
}

TEST_P(BlobStoreConformance, IfAbsentRaceHasExactlyOneWinner) {
    constexpr int kRacers = 8;
    std::atomic<int> won{0};
    std::atomic<int> conflicts{0};
    std::vector<std::thread> racers;
    for (int i = 0; i < kRacers; ++i)
        racers.emplace_back([&, i] {
            auto r =
                store().put("race", pattern_bytes(1000, 100 + i), PutOptions{.if_absent = true});
            if (r)
                ++won;
            else if (r.error().kind() == ErrorKind::conflict)
                ++conflicts;
        });
    for (auto& r : racers) r.join();
    EXPECT_EQ(won.load(), 1);
    EXPECT_EQ(conflicts.load(), kRacers - 1);
}

TEST_P(BlobStoreConformance, ConcurrentPutsAndGetsOfDifferentKeysAllLand) {
    constexpr int kThreads = 8;
    constexpr int kEach = 6;
    std::atomic<int> bad{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t)
        workers.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                auto key = "conc/" + std::to_string(t) + "/" + std::to_string(i);
                auto data = pattern_bytes(200'000 + 1000 * i, t * 100 + i);
                if (!store().put(key, data)) ++bad;
                auto got = store().get(key);
                if (!got || *got != data) ++bad;
            }
        });
    for (auto& w : workers) w.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(keys("conc/").size(), static_cast<std::size_t>(kThreads * kEach));
}

TEST_P(BlobStoreConformance, ConcurrentReadersNeverSeeAPartialObject) {
    auto a = pattern_bytes(300'000, 21);
    auto b = pattern_bytes(200'000, 22);
    ASSERT_TRUE(store().put("swap", a));
    std::atomic<bool> stop{false};
    std::atomic<int> torn{0};
    std::thread reader([&] {
        while (!stop) {
            auto got = store().get("swap");
            if (!got || (*got != a && *got != b)) ++torn;
        }
    });
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(store().put("swap", i % 2 ? a : b));
    stop = true;
    reader.join();
    EXPECT_EQ(torn.load(), 0);
}

TEST_P(BlobStoreConformance, EveryPrintableCharacterRoundTripsInKeysAndListings) {
    // Printable ASCII but '/', in pieces (the local store's limit is a file name's 255 bytes).
    std::vector<std::string> expected;
    std::string all;
    for (char c = 0x21; c <= 0x7e; ++c)
        if (c != '/') all += c;
    for (std::size_t at = 0; at < all.size(); at += 16) {
        auto key = "odd/" + all.substr(at, 16) + "/x";
        if (key.find("/./") != std::string::npos) continue;
        ASSERT_TRUE(store().put(key, view(key))) << key;
        EXPECT_EQ(must_get(key), std::vector<std::uint8_t>(key.begin(), key.end())) << key;
        expected.push_back(key);
    }
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(keys("odd/"), expected);
    for (const auto& key : expected) {
        ASSERT_TRUE(store().remove(key)) << key;
        EXPECT_EQ(store().stat(key).error().kind(), ErrorKind::not_found) << key;
    }
}

TEST_P(BlobStoreConformance, InvalidKeysAreRefusedNamingTheKey) {
    for (std::string key :
         {std::string(), std::string("/lead"), std::string("trail/"), std::string("a//b"),
          std::string("a/../b"), std::string("./a"), std::string("sp ace"), std::string("tab\tkey"),
          std::string(1025, 'k'), std::string("nul\0x", 5)}) {
        auto put = store().put(key, view("x"));
        ASSERT_FALSE(put) << "'" << key << "'";
        EXPECT_EQ(put.error().kind(), ErrorKind::invalid_argument) << put.error().message();
        EXPECT_EQ(store().get(key).error().kind(), ErrorKind::invalid_argument);
        EXPECT_EQ(store().stat(key).error().kind(), ErrorKind::invalid_argument);
        EXPECT_EQ(store().remove(key).error().kind(), ErrorKind::invalid_argument);
    }
    EXPECT_TRUE(keys("").empty());
}

}  // namespace vmshadow::storage::conformance
