// SPDX-License-Identifier: MIT
// repo check --read-data of a share of the packs (a daemon's check job with
// read-data-percent): each day reads about that share, and consecutive days together read
// every pack.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "repo/check.h"
#include "repo_test_util.h"
#include "unit/common/temp_dir.h"

namespace vmshadow::repo::test {
namespace {

Hash256 random_hash(std::mt19937_64& rng) {
    Hash256 h;
    for (auto& b : h.bytes) b = static_cast<std::uint8_t>(rng());
    return h;
}

TEST(CheckSubsetTest, ConsecutiveDaysOfASubsetReadEveryPackAndEachDayAboutItsShare) {
    std::mt19937_64 rng(7);
    std::vector<Hash256> packs;
    for (int i = 0; i < 2000; ++i) packs.push_back(random_hash(rng));
    for (unsigned percent : {1u, 7u, 10u, 30u, 50u, 99u}) {
        std::set<std::size_t> seen;
        const std::int64_t first_day = 20429;
        const unsigned days = (100 + percent - 1) / percent;
        for (unsigned d = 0; d < days; ++d) {
            std::size_t today = 0;
            for (std::size_t i = 0; i < packs.size(); ++i) {
                if (pack_in_read_subset(packs[i], percent, first_day + d)) {
                    seen.insert(i);
                    ++today;
                }
            }
            const double share = 100.0 * static_cast<double>(today) / packs.size();
            EXPECT_NEAR(share, percent, 3.0) << percent << "% on day " << d;
        }
        EXPECT_EQ(seen.size(), packs.size()) << percent << "% over " << days << " days";
    }
    EXPECT_TRUE(pack_in_read_subset(packs[0], 100, 1));
}

TEST(CheckSubsetTest, ASubsetReadsFewerPacksAndAPercentOutOfRangeIsRefused) {
    TempDir dir;
    InitOptions init;
    init.chunk_size = 4096;
    ASSERT_TRUE(Repository::init(dir.sub("repo"), init));
    auto repo = open_plain(dir.sub("repo"), nullptr, 16 * 1024);
    ASSERT_TRUE(repo) << repo.error().message();
    ASSERT_TRUE(backup_bytes(**repo, "vm", {{"vda", random_data(2 * 1024 * 1024, 3)}}));
    auto all = check_repository(**repo, {.read_data = true});
    ASSERT_TRUE(all) << all.error().message();
    ASSERT_GT(all->packs, 20u);
    EXPECT_EQ(all->packs_read, all->packs);
    auto part = check_repository(**repo, {.read_data = true, .read_data_percent = 25});
    ASSERT_TRUE(part) << part.error().message();
    EXPECT_TRUE(part->ok());
    EXPECT_LT(part->packs_read, all->packs_read);
    EXPECT_LT(part->bytes_read, all->bytes_read);
    for (unsigned bad : {0u, 101u}) {
        auto refused = check_repository(**repo, {.read_data = true, .read_data_percent = bad});
        ASSERT_FALSE(refused);
        EXPECT_EQ(refused.error().kind(), ErrorKind::invalid_argument);
    }
}

}  // namespace
}  // namespace vmshadow::repo::test
