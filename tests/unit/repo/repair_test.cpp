// SPDX-License-Identifier: MIT
// `repo repair index`: the index rebuilt from the packs' trailers alone, damaged packs left
// out (and left in place), the new index written before the old ones go.
#include "repo/repair.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "fault_env.h"
#include "repo/check.h"
#include "repo/format.h"
#include "repo/gc.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;
constexpr std::uint64_t kPackSize = 24 * 1024;  // several packs per backup

std::vector<std::string> files_in(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file()) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
}

void flip_byte(const std::string& path, std::uint64_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put(static_cast<char>(c ^ 0x5a));
    ASSERT_TRUE(f.good()) << path;
}

class RepairIndexTest : public ::testing::Test {
  protected:
    // A repository of the current format (frames) with two VMs, two points each, in several
    // packs and index files.
    void make(bool encrypt = false) {
        path = dir.sub("repo");
        InitOptions init;
        init.chunk_size = 4096;
        init.map_fanout = 4;
        init.encrypt = encrypt;
        init.password = "secret";
        init.kdf = ScryptParams{1024, 8, 1};
        ASSERT_TRUE(Repository::init(path, init));
        reopen();
        for (int round = 0; round < 2; ++round)
            for (std::string vm : {"web", "db"}) {
                Bytes data = text_data(24 * 4096, 10 + round * 3 + vm.size());
                Bytes noise = random_data(6 * 4096, 20 + round);
                std::copy(noise.begin(), noise.end(), data.begin() + 3 * 4096);
                std::fill(data.begin() + 14 * 4096, data.begin() + 17 * 4096, 0);  // a hole
                auto p = backup_bytes(*repo, vm, {{"vda", data}});
                ASSERT_TRUE(p) << p.error().message();
                expected[p->id] = data;
            }
        ASSERT_GE(files_in(path + "/index").size(), 4u);
        ASSERT_GE(files_in(path + "/data").size(), 4u);
    }

    void reopen(Env* env = nullptr) {
        repo.reset();
        auto r = open_plain(path, env, kPackSize);
        ASSERT_TRUE(r) << r.error().message();
        repo = std::move(*r);
    }

    // Every point is listed and restores bit-exact, through a freshly opened repository.
    void expect_every_point_restores(const std::string& where) {
        auto fresh = open_plain(path);
        ASSERT_TRUE(fresh) << where;
        auto loaded = (*fresh)->load_index();
        ASSERT_TRUE(loaded) << where << ": " << loaded.error().message();
        auto listing = (*fresh)->list_points();
        ASSERT_TRUE(listing) << where;
        ASSERT_EQ(listing->points.size(), expected.size()) << where;
        for (const auto& p : listing->points) {
            auto back = read_disk(**fresh, p, "vda");
            ASSERT_TRUE(back) << where << ": " << back.error().message();
            EXPECT_TRUE(*back == expected.at(p.id)) << where << ": point " << p.id.short_hex();
        }
    }

    void expect_check_clean(const std::string& where) {
        auto fresh = open_plain(path);
        ASSERT_TRUE(fresh) << where;
        auto report = check_repository(**fresh, {.read_data = true});
        ASSERT_TRUE(report) << where << ": " << report.error().message();
        EXPECT_TRUE(report->ok()) << where << ": " << report->problems.front();
        EXPECT_TRUE(report->warnings.empty()) << where << ": " << report->warnings.front();
    }

    TempDir dir;
    std::string path;
    std::unique_ptr<Repository> repo;
    std::map<Hash256, Bytes> expected;
};

TEST_F(RepairIndexTest, DeletedIndexIsRebuiltFromPacksAndEveryPointRestoresBitExact) {
    ASSERT_NO_FATAL_FAILURE(make());
    std::size_t packs = files_in(path + "/data").size();
    for (const auto& f : files_in(path + "/index")) fs::remove(f);

    auto before = check_repository(*repo, {});
    ASSERT_TRUE(before);
    EXPECT_FALSE(before->ok());
    EXPECT_NE(before->problems.back().find("vmshadow repo repair index"), std::string::npos)
        << "check names the way out when the index is missing: " << before->problems.back();

    auto report = repair_index(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->ok());
    EXPECT_EQ(report->packs_indexed, packs);
    EXPECT_TRUE(report->skipped.empty());
    EXPECT_TRUE(report->index_files_replaced.empty());
    ASSERT_TRUE(report->new_index);
    EXPECT_EQ(files_in(path + "/index"),
              std::vector<std::string>{path + "/index/" + report->new_index->hex()});
    EXPECT_EQ(files_in(path + "/data").size(), packs) << "repair deletes no pack";
    EXPECT_TRUE(files_in(path + "/locks").empty());
    // The same object sees the new index at once.
    EXPECT_EQ(repo->index().packs().size(), packs);
    expect_every_point_restores("after repair");
    expect_check_clean("after repair");
}

TEST_F(RepairIndexTest, LostIndexFileCostsNoPackToTheNextBackupOrGcAndRepairBringsAllBack) {
    ASSERT_NO_FATAL_FAILURE(make());
    std::vector<std::string> packs = files_in(path + "/data");
    // One index file lost (the newest point's session's), as a disk error or a careless
    // cleanup would.
    auto index_files = files_in(path + "/index");
    fs::remove(index_files.front());
    ASSERT_NO_FATAL_FAILURE(reopen());
    ASSERT_TRUE(repo->load_index());
    EXPECT_FALSE(repo->index_covers_points());

    // A backup (whose start cleans leftovers) and gc: no pack of before goes.
    auto p = backup_bytes(*repo, "other", {{"vda", random_data(8 * 4096, 99)}});
    ASSERT_TRUE(p) << p.error().message();
    auto gc = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_FALSE(gc);
    // Which words depend on whether a map block or only data chunks were lost; either way
    // it names the command that says what to do.
    EXPECT_NE(gc.error().message().find("`vmshadow repo "), std::string::npos)
        << gc.error().message();
    for (const auto& pack : packs) EXPECT_TRUE(fs::exists(pack)) << pack;

    auto report = repair_index(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->ok());
    expected[p->id] = random_data(8 * 4096, 99);
    expect_every_point_restores("after repair");
    ASSERT_TRUE(collect_garbage(*repo, {.grace_seconds = 0}));
    expect_every_point_restores("after gc");
}

TEST_F(RepairIndexTest, HealthyRepositoryEndsWithOneIndexFileAndTheSameBlobs) {
    ASSERT_NO_FATAL_FAILURE(make());
    ASSERT_TRUE(repo->load_index());
    std::size_t blobs = repo->index().blob_count();
    auto old = files_in(path + "/index");
    auto report = repair_index(*repo, {.read_data = true});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->ok());
    EXPECT_GT(report->bytes_read, 0u);
    EXPECT_EQ(report->index_files_replaced.size(), old.size());
    EXPECT_EQ(files_in(path + "/index").size(), 1u);
    EXPECT_EQ(repo->index().blob_count(), blobs);
    expect_every_point_restores("after repair");
    expect_check_clean("after repair");
}

TEST_F(RepairIndexTest, DamagedIndexFileIsNamedByCheckAndReplacedByRepair) {
    ASSERT_NO_FATAL_FAILURE(make());
    std::string damaged = files_in(path + "/index").front();
    flip_byte(damaged, fs::file_size(damaged) / 2);
    std::string name = fs::path(damaged).filename().string();

    auto loaded = repo->load_index();
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.error().message().find(name), std::string::npos) << loaded.error().message();
    EXPECT_NE(loaded.error().message().find("vmshadow repo repair index"), std::string::npos)
        << loaded.error().message();
    auto check = check_repository(*repo, {});
    ASSERT_TRUE(check);
    ASSERT_FALSE(check->ok());
    bool named = false;
    for (const auto& p : check->problems)
        named |= p.find(name) != std::string::npos &&
                 p.find("vmshadow repo repair index") != std::string::npos;
    EXPECT_TRUE(named) << check->problems.front();

    auto report = repair_index(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->ok());
    ASSERT_EQ(report->damaged_index_files.size(), 1u);
    EXPECT_NE(report->damaged_index_files[0].find(name), std::string::npos);
    EXPECT_FALSE(fs::exists(damaged));
    expect_every_point_restores("after repair");
    expect_check_clean("after repair");
}

TEST_F(RepairIndexTest, PackWithDamagedTrailerIsReportedAndLeftInPlaceOthersAreIndexed) {
    ASSERT_NO_FATAL_FAILURE(make());
    auto packs = files_in(path + "/data");
    std::string bad = packs.back();
    // Inside the sealed trailer, just before its length and end magic.
    flip_byte(bad, fs::file_size(bad) - format::kPackFooterSize - 3);

    auto report = repair_index(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_FALSE(report->ok());
    ASSERT_EQ(report->skipped.size(), 1u);
    EXPECT_EQ(report->skipped[0].path, bad);
    EXPECT_NE(report->skipped[0].why.find("trailer"), std::string::npos) << report->skipped[0].why;
    EXPECT_EQ(report->packs_indexed, packs.size() - 1);
    EXPECT_TRUE(fs::exists(bad)) << "a skipped pack is never deleted";
    Hash256 bad_id = *Hash256::from_hex(fs::path(bad).filename().string());
    EXPECT_FALSE(repo->index().has_pack(bad_id));
    for (const auto& p : packs) {
        if (p == bad) continue;
        EXPECT_TRUE(repo->index().has_pack(*Hash256::from_hex(fs::path(p).filename().string())))
            << p;
    }
}

TEST_F(RepairIndexTest, CheckAfterRepairNamesTheDamagedPackItLeftOutAndNoLongerSaysRunRepair) {
    ASSERT_NO_FATAL_FAILURE(make());
    std::string bad = files_in(path + "/data").back();
    flip_byte(bad, fs::file_size(bad) - format::kPackFooterSize - 3);
    auto repaired = repair_index(*repo, {});
    ASSERT_TRUE(repaired) << repaired.error().message();
    ASSERT_EQ(repaired->skipped.size(), 1u);

    for (bool read_data : {false, true}) {
        auto report = check_repository(*repo, {.read_data = read_data});
        ASSERT_TRUE(report) << report.error().message();
        EXPECT_FALSE(report->ok());
        bool named = false;
        for (const auto& p : report->problems) {
            EXPECT_EQ(p.find("probably missing"), std::string::npos) << p;
            EXPECT_EQ(p.find("run `vmshadow repo repair index`"), std::string::npos)
                << "repair was run; running it again changes nothing: " << p;
            if (p.find(bad) != std::string::npos) {
                named = true;
                EXPECT_NE(p.find("damaged"), std::string::npos) << p;
                EXPECT_NE(p.find("leaves it out"), std::string::npos) << p;
            }
        }
        EXPECT_TRUE(named) << "check names the pack repair left out";
        EXPECT_FALSE(report->damaged_points.empty());
    }
}

TEST_F(RepairIndexTest, CheckSaysAnUnindexedPackAfterALostIndexFileIsNeededNotGarbage) {
    ASSERT_NO_FATAL_FAILURE(make());
    fs::remove(files_in(path + "/index").front());
    ASSERT_TRUE(repo->load_index());
    auto report = check_repository(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_FALSE(report->ok());
    for (const auto& w : report->warnings)
        EXPECT_EQ(w.find("removed by gc"), std::string::npos) << "the wrong cause: " << w;
    bool named = false;
    for (const auto& p : report->problems)
        if (p.find("is in no index while restore points miss chunks") != std::string::npos) {
            named = true;
            EXPECT_NE(p.find("an index file was lost"), std::string::npos) << p;
            EXPECT_NE(p.find("vmshadow repo repair index"), std::string::npos) << p;
        }
    EXPECT_TRUE(named);
}

TEST_F(RepairIndexTest, ReadDataLeavesOutAPackWhoseContentDoesNotMatchItsName) {
    ASSERT_NO_FATAL_FAILURE(make());
    std::string bad = files_in(path + "/data").front();
    flip_byte(bad, format::kPackHeaderSize + 10);  // a stored blob; the trailer is intact

    auto quick = repair_index(*repo, {});
    ASSERT_TRUE(quick) << quick.error().message();
    EXPECT_TRUE(quick->ok()) << "without --read-data only trailers are read";

    auto thorough = repair_index(*repo, {.read_data = true});
    ASSERT_TRUE(thorough) << thorough.error().message();
    ASSERT_EQ(thorough->skipped.size(), 1u);
    EXPECT_EQ(thorough->skipped[0].path, bad);
    EXPECT_NE(thorough->skipped[0].why.find("does not match its name"), std::string::npos);
    EXPECT_TRUE(fs::exists(bad));
}

TEST_F(RepairIndexTest, PackNamedByTheOldIndexButGoneIsReportedMissing) {
    ASSERT_NO_FATAL_FAILURE(make());
    std::string gone = files_in(path + "/data").front();
    fs::remove(gone);
    auto report = repair_index(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_FALSE(report->ok());
    EXPECT_EQ(report->missing_packs, std::vector<std::string>{fs::path(gone).filename().string()});
}

TEST_F(RepairIndexTest, EncryptedRepositoryIsRepaired) {
    ASSERT_NO_FATAL_FAILURE(make(/*encrypt=*/true));
    for (const auto& f : files_in(path + "/index")) fs::remove(f);
    auto report = repair_index(*repo, {.read_data = true});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->ok());
    EXPECT_EQ(files_in(path + "/index").size(), 1u);
    expect_every_point_restores("after repair");
    expect_check_clean("after repair");
}

TEST_F(RepairIndexTest, RepairWaitsForOtherLockHolders) {
    ASSERT_NO_FATAL_FAILURE(make());
    auto old = files_in(path + "/index");
    auto reader = repo->lock(LockMode::shared, "image restore");
    ASSERT_TRUE(reader);
    auto report = repair_index(*repo, {});
    ASSERT_FALSE(report);
    EXPECT_EQ(report.error().kind(), ErrorKind::locked);
    EXPECT_EQ(files_in(path + "/index"), old) << "nothing changed";
}

// Kills repair at each of its writes, fsyncs, renames and unlinks. From a healthy repository,
// every point stays readable right after the crash (the new index comes before any removal);
// from one whose index was lost, the next repair succeeds. Either way every point then
// restores bit-exact and check is clean.
TEST_F(RepairIndexTest, ACrashAtAnyStepLeavesARepositoryTheNextRepairCompletes) {
    ASSERT_NO_FATAL_FAILURE(make());
    std::string template_repo = dir.sub("template");
    repo.reset();
    fs::rename(path, template_repo);
    std::set<std::string> kinds;
    for (bool index_lost : {false, true}) {
        std::uint64_t total = 0;
        for (std::uint64_t k = 0; k == 0 || k <= total; ++k) {
            std::string where = std::string(index_lost ? "lost index" : "healthy") +
                                ", crash at operation " + std::to_string(k);
            fs::remove_all(path);
            fs::copy(template_repo, path, fs::copy_options::recursive);
            if (index_lost)
                for (const auto& f : files_in(path + "/index")) fs::remove(f);
            {
                FaultEnv env(k);
                ASSERT_NO_FATAL_FAILURE(reopen(&env));
                auto report = repair_index(*repo, {});
                repo.reset();
                if (k == 0) {
                    ASSERT_TRUE(report) << report.error().message();
                    total = env.operations();
                    ASSERT_GE(total, 8u);
                    continue;
                }
                EXPECT_TRUE(env.crashed()) << where;
                std::string last = env.log().back();
                kinds.insert(last.substr(0, last.find(' ')));
                where += " (" + last + ")";
                bool lock_release =
                    last.starts_with("unlink ") && last.find("/locks/") != std::string::npos;
                EXPECT_TRUE(!report || lock_release) << where << " but reported success";
            }
            if (!index_lost) {
                ASSERT_NO_FATAL_FAILURE(expect_every_point_restores(where));
            }
            ASSERT_NO_FATAL_FAILURE(reopen());
            auto again = repair_index(*repo, {});
            ASSERT_TRUE(again) << where << ": next repair: " << again.error().message();
            EXPECT_TRUE(again->ok()) << where;
            ASSERT_NO_FATAL_FAILURE(expect_every_point_restores(where + ", after the next repair"));
            ASSERT_NO_FATAL_FAILURE(expect_check_clean(where + ", after the next repair"));
            EXPECT_EQ(files_in(path + "/index").size(), 1u) << where;
        }
    }
    for (const char* kind : {"write", "fsync", "rename", "unlink"})
        EXPECT_TRUE(kinds.contains(kind)) << "no crash at a " << kind;
}

}  // namespace
}  // namespace vmshadow::repo::test

namespace vmshadow::repo::test {
namespace {

// Records the progress a repair reports and requests cancellation after `cancel_after` packs.
struct CancelAfterPacks : ProgressSink {
    CancelToken token;
    std::uint64_t cancel_after = 0;
    std::vector<Progress> seen;
    void update(const Progress& p) override {
        seen.push_back(p);
        if (cancel_after && p.phase == "packs" && p.items_done >= cancel_after) token.request();
    }
};

TEST_F(RepairIndexTest, RepairReportsPacksReadAndACancelWhileReadingChangesNothing) {
    ASSERT_NO_FATAL_FAILURE(make());
    auto index_before = files_in(path + "/index");
    std::size_t packs = files_in(path + "/data").size();

    CancelAfterPacks sink;
    sink.cancel_after = 2;
    TaskContext task(&sink, nullptr, sink.token, system_clock());
    auto cancelled = repair_index(*repo, {.read_data = true, .task = &task});
    ASSERT_FALSE(cancelled);
    EXPECT_EQ(cancelled.error().kind(), ErrorKind::cancelled) << cancelled.error().message();
    EXPECT_NE(cancelled.error().message().find("nothing was changed"), std::string::npos)
        << cancelled.error().message();
    EXPECT_EQ(files_in(path + "/index"), index_before) << "a cancelled repair writes no index";
    ASSERT_NO_FATAL_FAILURE(expect_check_clean("after the cancelled repair"));

    // The lock is free again, and a whole run reports every pack of the total, bytes rising.
    CancelAfterPacks watch;
    TaskContext watched(&watch, nullptr, watch.token, system_clock());
    auto report = repair_index(*repo, {.read_data = true, .task = &watched});
    ASSERT_TRUE(report) << report.error().message();
    std::uint64_t last_bytes = 0, last_items = 0;
    for (const auto& p : watch.seen) {
        if (p.phase != "packs") continue;
        EXPECT_EQ(p.items_total, packs);
        EXPECT_GE(p.bytes_done, last_bytes);
        EXPECT_GE(p.items_done, last_items);
        last_bytes = p.bytes_done;
        last_items = p.items_done;
    }
    EXPECT_EQ(last_items, packs);
    EXPECT_EQ(last_bytes, report->bytes_read);
    ASSERT_NO_FATAL_FAILURE(expect_every_point_restores("after the repair"));
}

}  // namespace
}  // namespace vmshadow::repo::test
