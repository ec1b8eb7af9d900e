// SPDX-License-Identifier: MIT
#include "repo/gc.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "repo/check.h"
#include "repo/repair.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

RestorePoint point_at(const std::string& vm, const std::string& iso, int n) {
    std::tm tm{};
    strptime(iso.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    RestorePoint p;
    p.vm = vm;
    p.time = timegm(&tm);
    p.time_us = p.time * 1000000;
    p.id.bytes[0] = static_cast<std::uint8_t>(n);
    return p;
}

std::vector<std::string> kept(const std::vector<PruneDecision>& plan) {
    std::vector<std::string> out;
    for (const auto& d : plan)
        if (d.keep) out.push_back(d.vm + " " + iso8601_utc(d.time));
    return out;
}

TEST(PrunePlan, RulesApplyPerVmNeverAcrossVms) {
    std::vector<RestorePoint> points{
        point_at("web", "2026-11-20T10:00:00", 1), point_at("web", "2026-11-20T18:00:00", 2),
        point_at("web", "2026-11-21T09:00:00", 3), point_at("web", "2026-11-21T21:00:00", 4),
        point_at("db", "2026-11-01T09:00:00", 5),
    };
    auto plan = plan_prune(points, KeepPolicy{.last = 1, .daily = 2}, "");
    EXPECT_EQ(kept(plan),
              (std::vector<std::string>{"db 2026-11-01T09:00:00Z", "web 2026-11-21T21:00:00Z",
                                        "web 2026-11-20T18:00:00Z"}));
    // --vm: other VMs are not even planned.
    auto only_web = plan_prune(points, KeepPolicy{.last = 1}, "web");
    EXPECT_EQ(only_web.size(), 4u);
    EXPECT_EQ(kept(only_web), (std::vector<std::string>{"web 2026-11-21T21:00:00Z"}));
}

TEST(PrunePlan, MonthlyAndWeeklyKeepTheNewestOfEachPeriod) {
    std::vector<RestorePoint> points{
        point_at("vm", "2026-09-03T00:00:00", 1), point_at("vm", "2026-09-28T00:00:00", 2),
        point_at("vm", "2026-10-15T00:00:00", 3), point_at("vm", "2026-11-02T00:00:00", 4),
        point_at("vm", "2026-11-03T00:00:00", 5)};
    auto plan = plan_prune(points, KeepPolicy{.monthly = 2}, "");
    EXPECT_EQ(kept(plan),
              (std::vector<std::string>{"vm 2026-11-03T00:00:00Z", "vm 2026-10-15T00:00:00Z"}));
    auto weekly = plan_prune(points, KeepPolicy{.weekly = 1}, "");
    EXPECT_EQ(kept(weekly), (std::vector<std::string>{"vm 2026-11-03T00:00:00Z"}));
}

TEST(PrunePlan, YearlyKeepsTheNewestPointOfEachOfTheNewestYears) {
    std::vector<RestorePoint> points{
        point_at("vm", "2023-02-01T00:00:00", 1), point_at("vm", "2023-12-31T23:59:59", 2),
        point_at("vm", "2024-01-01T00:00:00", 3), point_at("vm", "2024-07-01T00:00:00", 4),
        point_at("vm", "2026-03-01T00:00:00", 5), point_at("vm", "2026-11-03T00:00:00", 6)};
    auto plan = plan_prune(points, KeepPolicy{.yearly = 2}, "");
    EXPECT_EQ(kept(plan),
              (std::vector<std::string>{"vm 2026-11-03T00:00:00Z", "vm 2024-07-01T00:00:00Z"}));
    for (const auto& d : plan)
        if (d.keep) {
            EXPECT_EQ(d.reasons[0], "yearly " + iso8601_utc(d.time).substr(0, 4));
        }
    // A gap year counts no year: 3 years kept are 2026, 2024 and 2023 (its last point).
    auto three = plan_prune(points, KeepPolicy{.yearly = 3}, "");
    EXPECT_EQ(kept(three).back(), "vm 2023-12-31T23:59:59Z");
    EXPECT_EQ(kept(three).size(), 3u);
    // With another rule: reasons accumulate, the union is kept.
    auto both = plan_prune(points, KeepPolicy{.last = 1, .yearly = 1}, "");
    EXPECT_EQ(kept(both), (std::vector<std::string>{"vm 2026-11-03T00:00:00Z"}));
    EXPECT_EQ(both[0].reasons, (std::vector<std::string>{"last", "yearly 2026"}));
    EXPECT_FALSE((KeepPolicy{.yearly = 1}).empty());
}

std::size_t dir_entries(const std::string& path) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(path)) ++n;
    return n;
}

class GcTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path = dir.sub("repo");
        auto r = init_small(path, nullptr, 32 * 1024);
        ASSERT_TRUE(r);
        repo = std::move(*r);
    }
    TempDir dir;
    std::string path;
    std::unique_ptr<Repository> repo;
};

TEST_F(GcTest, ForgetThenGcFreesSpaceAndKeepsEveryOtherPoint) {
    Bytes a = random_data(64 * 4096, 1), b = random_data(64 * 4096, 2);
    auto pa = backup_bytes(*repo, "a", {{"vda", a}});
    auto pb = backup_bytes(*repo, "b", {{"vda", b}});
    ASSERT_TRUE(pa && pb);
    auto before = dir_bytes(path + "/data");
    ASSERT_TRUE(repo->forget({pa->id}));
    auto report = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_GE(report->blobs_dead, 64u);
    auto after = dir_bytes(path + "/data");
    EXPECT_LT(after, before * 6 / 10);
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    ASSERT_EQ(listing->points.size(), 1u);
    auto back = read_disk(*repo, listing->points[0], "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, b);
    auto check = check_repository(*repo, {.read_data = true});
    ASSERT_TRUE(check);
    EXPECT_TRUE(check->ok());
    // A second gc finds nothing to do.
    auto again = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_TRUE(again);
    EXPECT_EQ(again->packs_removed + again->packs_rewritten, 0u);
}

TEST_F(GcTest, AnnotationsOfForgottenPointsGoWithGcAndTheOthersStay) {
    auto pa = backup_bytes(*repo, "a", {{"vda", random_data(8 * 4096, 1)}});
    auto pb = backup_bytes(*repo, "b", {{"vda", random_data(8 * 4096, 2)}});
    ASSERT_TRUE(pa && pb);
    ASSERT_TRUE(repo->annotate(pa->id, "boot_verification", {{"ok", true}}));
    ASSERT_TRUE(repo->annotate(pb->id, "boot_verification", {{"ok", false}}));
    ASSERT_TRUE(repo->forget({pa->id}));
    auto dry = collect_garbage(*repo, {.dry_run = true, .grace_seconds = 0});
    ASSERT_TRUE(dry) << dry.error().message();
    EXPECT_EQ(dry->annotations_removed, 1u);
    EXPECT_EQ(dir_entries(path + "/annotations"), 2u) << "a dry run removes nothing";
    auto report = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_EQ(report->annotations_removed, 1u);
    EXPECT_EQ(dir_entries(path + "/annotations"), 1u);
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    ASSERT_EQ(listing->points.size(), 1u);
    ASSERT_EQ(listing->points[0].annotations.size(), 1u);
    EXPECT_EQ(listing->points[0].annotations[0].data["ok"], false);
}

TEST_F(GcTest, SharedDataSurvivesForgettingOnePointThatUsesIt) {
    Bytes a = random_data(32 * 4096, 1);
    auto p1 = backup_bytes(*repo, "a", {{"vda", a}});
    a[5] ^= 1;
    auto p2 = backup_bytes(*repo, "a", {{"vda", a}});
    ASSERT_TRUE(p1 && p2);
    ASSERT_TRUE(repo->forget({p1->id}));
    ASSERT_TRUE(collect_garbage(*repo, {.repack_dead_fraction = 0.0, .grace_seconds = 0}));
    auto back = read_disk(*repo, *p2, "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, a);
}

TEST_F(GcTest, GcWaitsForReadersHoldingTheSharedLock) {
    auto reader = repo->lock(LockMode::shared, "image restore");
    ASSERT_TRUE(reader);
    auto report = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_FALSE(report);
    EXPECT_EQ(report.error().kind(), ErrorKind::locked);
    EXPECT_NE(report.error().message().find("image restore"), std::string::npos);
    reader->reset();
    EXPECT_TRUE(collect_garbage(*repo, {.grace_seconds = 0}));
}

TEST_F(GcTest, ExclusiveLockKeepsBackupsOutButNotAfterRelease) {
    auto gc_lock = repo->lock(LockMode::exclusive, "gc");
    ASSERT_TRUE(gc_lock);
    auto session = BackupSession::begin(*repo, {});
    ASSERT_FALSE(session);
    EXPECT_EQ(session.error().kind(), ErrorKind::locked);
    gc_lock->reset();
    EXPECT_TRUE(BackupSession::begin(*repo, {}));
}

TEST_F(GcTest, LockOfADeadProcessIsBroken) {
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, nullptr, 0);  // now `child` names no process
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::ofstream(path + "/locks/deadbeef")
        << nlohmann::json{{"pid", child},      {"start_time", "1"}, {"host", host},
                          {"exclusive", true}, {"operation", "gc"}, {"time", "x"}}
               .dump();
    auto lock = repo->lock(LockMode::exclusive, "prune");
    ASSERT_TRUE(lock) << lock.error().message();
    EXPECT_FALSE(std::filesystem::exists(path + "/locks/deadbeef"));
}

TEST_F(GcTest, LockOfAnotherHostIsNeverBroken) {
    std::ofstream(path + "/locks/cafe")
        << nlohmann::json{{"pid", 1},          {"start_time", "1"}, {"host", "elsewhere"},
                          {"exclusive", true}, {"operation", "gc"}, {"time", "x"}}
               .dump();
    auto lock = repo->lock(LockMode::shared, "backup");
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().kind(), ErrorKind::locked);
}

// The commit record of `p` (a point alone in its record), as a path.
std::string record_of(const std::string& repo_path, const RestorePoint& p) {
    return repo_path + "/commits/" + p.commit.hex();
}

TEST_F(GcTest, LostCommitRecordIsReportedByCheckAndItsDataKeptForTheGracePeriod) {
    Bytes a = random_data(32 * 4096, 1), b = random_data(32 * 4096, 2);
    auto pa = backup_bytes(*repo, "a", {{"vda", a}});
    auto pb = backup_bytes(*repo, "b", {{"vda", b}});
    ASSERT_TRUE(pa && pb);
    ASSERT_TRUE(std::filesystem::remove(record_of(path, *pa)));

    // check: not damage to any point, but shown, with what it may be and what to do.
    auto check = check_repository(*repo, {.read_data = true});
    ASSERT_TRUE(check) << check.error().message();
    EXPECT_TRUE(check->ok());
    EXPECT_GE(check->unreferenced_blobs, 32u);
    EXPECT_GE(check->unreferenced_packs, 1u);
    EXPECT_EQ(check->unreferenced_young, check->unreferenced_packs);
    ASSERT_EQ(check->warnings.size(), 1u);
    EXPECT_NE(check->warnings[0].find("referenced by no restore point"), std::string::npos);
    EXPECT_NE(check->warnings[0].find("commit record was lost"), std::string::npos);
    EXPECT_NE(check->warnings[0].find("put it back into commits/"), std::string::npos);

    // gc keeps it while it is younger than the grace period: the point still reads back.
    auto kept = collect_garbage(*repo, {});
    ASSERT_TRUE(kept) << kept.error().message();
    EXPECT_EQ(kept->packs_removed, 0u);
    EXPECT_GE(kept->packs_kept_young, 1u);
    EXPECT_GE(kept->blobs_kept_young, 32u);
    auto back = read_disk(*repo, *pa, "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, a);

    // A day later (the clock is injected), gc frees it; the other point is untouched.
    ManualClock later(system_clock().now() + std::chrono::seconds(kDefaultGraceSeconds + 60));
    repo->set_clock(later);
    auto freed = collect_garbage(*repo, {});
    ASSERT_TRUE(freed) << freed.error().message();
    EXPECT_EQ(freed->packs_kept_young, 0u);
    EXPECT_GE(freed->blobs_dead, 32u);
    EXPECT_FALSE(read_disk(*repo, *pa, "vda"));
    auto other = read_disk(*repo, *pb, "vda");
    ASSERT_TRUE(other) << other.error().message();
    EXPECT_EQ(*other, b);
    auto after = check_repository(*repo, {.read_data = true});
    ASSERT_TRUE(after);
    EXPECT_TRUE(after->ok());
    EXPECT_TRUE(after->warnings.empty()) << after->warnings.front();
}

TEST_F(GcTest, GraceZeroFreesUnreferencedDataAtOnceAndANegativeGraceIsRefused) {
    auto pa = backup_bytes(*repo, "a", {{"vda", random_data(16 * 4096, 1)}});
    ASSERT_TRUE(pa);
    ASSERT_TRUE(std::filesystem::remove(record_of(path, *pa)));
    for (std::int64_t bad : {std::int64_t{-1}, kMaxGraceSeconds + 1}) {
        auto refused = collect_garbage(*repo, {.grace_seconds = bad});
        ASSERT_FALSE(refused);
        EXPECT_EQ(refused.error().kind(), ErrorKind::invalid_argument);
        auto pruned = prune(*repo, KeepPolicy{.last = 1}, "", false, {.grace_seconds = bad});
        ASSERT_FALSE(pruned);
        EXPECT_EQ(pruned.error().kind(), ErrorKind::invalid_argument);
    }
    EXPECT_TRUE(read_disk(*repo, *pa, "vda")) << "a refused gc removes nothing";
    auto report = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_GE(report->packs_removed, 1u);
    EXPECT_FALSE(read_disk(*repo, *pa, "vda"));
}

TEST_F(GcTest, ForgottenDataOfAPruneStaysForTheGracePeriod) {
    Bytes a = random_data(16 * 4096, 1), b = random_data(16 * 4096, 2);
    auto p1 = backup_bytes(*repo, "a", {{"vda", a}});
    auto p2 = backup_bytes(*repo, "a", {{"vda", b}});
    ASSERT_TRUE(p1 && p2);
    auto pruned = prune(*repo, KeepPolicy{.last = 1}, "", false);
    ASSERT_TRUE(pruned) << pruned.error().message();
    ASSERT_TRUE(pruned->gc);
    EXPECT_EQ(pruned->gc->packs_removed, 0u);
    EXPECT_GE(pruned->gc->packs_kept_young, 1u);
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    EXPECT_EQ(listing->points.size(), 1u);
}

TEST_F(GcTest, DamagedCommitRecordBlocksGcUntilRepairRecordsQuarantinesIt) {
    Bytes a = random_data(16 * 4096, 1), b = random_data(16 * 4096, 2);
    auto pa = backup_bytes(*repo, "a", {{"vda", a}});
    auto pb = backup_bytes(*repo, "b", {{"vda", b}});
    ASSERT_TRUE(pa && pb);
    std::string record = record_of(path, *pa);
    std::ofstream(record, std::ios::trunc) << "garbage";

    auto check = check_repository(*repo, {});
    ASSERT_TRUE(check);
    ASSERT_FALSE(check->ok());
    EXPECT_NE(check->problems.front().find(record), std::string::npos) << check->problems.front();
    EXPECT_NE(check->problems.front().find("repo repair records"), std::string::npos);
    auto refused = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("repo repair records"), std::string::npos)
        << refused.error().message();

    auto moved = repair_records(*repo);
    ASSERT_TRUE(moved) << moved.error().message();
    ASSERT_EQ(moved->size(), 1u);
    EXPECT_EQ((*moved)[0].path, record);
    EXPECT_FALSE(std::filesystem::exists(record));
    EXPECT_TRUE(std::filesystem::exists(path + "/quarantine/commits-" + pa->commit.hex()));
    auto report = collect_garbage(*repo, {});
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_GE(report->packs_kept_young, 1u) << "the quarantined point's data waits out the grace";
    auto back = read_disk(*repo, *pb, "vda");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, b);
}

TEST_F(GcTest, RepairRecordsKeepsTheSoundPointsOfAPartlyDamagedRecord) {
    SessionOptions so;
    auto session = BackupSession::begin(*repo, so);
    ASSERT_TRUE(session);
    for (std::string vm : {"a", "b"}) {
        auto disk = (*session)->add_point(vm, "crash").add_disk("vda", 4096, nullptr);
        ASSERT_TRUE(disk);
        ASSERT_TRUE((*disk)->write(0, random_data(4096, 7)));
        ASSERT_TRUE((*disk)->finish());
    }
    auto committed = (*session)->commit();
    ASSERT_TRUE(committed) << committed.error().message();
    session->reset();
    ASSERT_EQ(committed->size(), 2u);
    // One of the record's two points loses its "vm": the record is partly damaged.
    std::string original = record_of(path, committed->front());
    auto sealed = read_file(Env::posix(), original);
    ASSERT_TRUE(sealed);
    auto plain = repo->codec().unseal(*sealed, "commit");
    ASSERT_TRUE(plain);
    auto j = nlohmann::json::parse(plain->begin(), plain->end());
    ASSERT_EQ(j["points"].size(), 2u);
    j["points"][1].erase("vm");
    std::string text = j.dump();
    Bytes resealed = repo->codec().seal(as_bytes(text), "commit");
    std::string damaged = path + "/commits/" + sha256(resealed).hex();
    std::ofstream(damaged, std::ios::binary)
        .write(reinterpret_cast<const char*>(resealed.data()),
               static_cast<std::streamsize>(resealed.size()));
    std::filesystem::remove(original);
    auto before = repo->list_points();
    ASSERT_TRUE(before);
    ASSERT_EQ(before->damaged.size(), 1u);
    ASSERT_EQ(before->points.size(), 1u);

    auto moved = repair_records(*repo);
    ASSERT_TRUE(moved) << moved.error().message();
    ASSERT_EQ(moved->size(), 1u);
    EXPECT_EQ((*moved)[0].kept, 1u);
    auto after = repo->list_points();
    ASSERT_TRUE(after);
    EXPECT_TRUE(after->damaged.empty());
    ASSERT_EQ(after->points.size(), 1u);
    EXPECT_EQ(after->points[0].id, before->points[0].id);
    EXPECT_TRUE(collect_garbage(*repo, {.grace_seconds = 0}));
    EXPECT_TRUE(read_disk(*repo, after->points[0], "vda"));
}

}  // namespace
}  // namespace vmshadow::repo::test

namespace vmshadow::repo::test {
namespace {

// Requests cancellation the moment the task enters `phase`.
struct CancelAtPhase : ProgressSink {
    CancelToken token;
    std::string phase;
    std::vector<std::string> seen;
    void update(const Progress& p) override {
        if (seen.empty() || seen.back() != p.phase) seen.push_back(p.phase);
        if (p.phase == phase) token.request();
    }
};

TEST_F(GcTest, GcCancelledWhileItMarksOrRewritesDeletesNothingAndTheNextGcFinishes) {
    // Two points sharing half their chunks: forgetting the first leaves its packs half dead,
    // worth rewriting.
    Bytes a = random_data(64 * 4096, 1);
    auto gone = backup_bytes(*repo, "a", {{"vda", a}});
    Bytes changed = random_data(32 * 4096, 2);
    std::copy(changed.begin(), changed.end(), a.begin());
    auto keep = backup_bytes(*repo, "a", {{"vda", a}});
    ASSERT_TRUE(keep && gone);
    ASSERT_TRUE(repo->forget({gone->id}));
    for (const char* phase : {"mark", "rewrite"}) {
        auto before = dir_bytes(path + "/data");
        CancelAtPhase sink;
        sink.phase = phase;
        TaskContext task(&sink, nullptr, sink.token, system_clock());
        auto cancelled = collect_garbage(
            *repo, {.repack_dead_fraction = 0.0, .grace_seconds = 0, .task = &task});
        ASSERT_FALSE(cancelled) << phase << " never came: " << ::testing::PrintToString(sink.seen);
        EXPECT_EQ(cancelled.error().kind(), ErrorKind::cancelled) << cancelled.error().message();
        EXPECT_GE(dir_bytes(path + "/data"), before)
            << "nothing deleted when cancelled in " << phase;
        auto back = read_disk(*repo, *keep, "vda");
        ASSERT_TRUE(back) << back.error().message();
        EXPECT_EQ(*back, a);
        auto check = check_repository(*repo, {.read_data = true});
        ASSERT_TRUE(check) << check.error().message();
        EXPECT_TRUE(check->ok()) << ::testing::PrintToString(check->problems);
    }
    auto finished = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_TRUE(finished) << finished.error().message();
    EXPECT_GE(finished->blobs_dead, 32u);
    auto back = read_disk(*repo, *keep, "vda");
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, a);
}

TEST_F(GcTest, CheckStopsWhenCancelled) {
    ASSERT_TRUE(backup_bytes(*repo, "a", {{"vda", random_data(8 * 4096, 1)}}));
    TaskContext task;
    task.cancel().request();
    auto check = check_repository(*repo, {.read_data = true, .task = &task});
    ASSERT_FALSE(check);
    EXPECT_EQ(check.error().kind(), ErrorKind::cancelled);
}

}  // namespace
}  // namespace vmshadow::repo::test
