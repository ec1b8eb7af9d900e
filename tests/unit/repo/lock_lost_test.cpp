// SPDX-License-Identifier: MIT
// A lock its holder loses: removed by another process (`repo unlock --remove-all` on another
// host), the holder never writes it again and stops with "lock was removed by another process,
// operation aborted"; a backup that lost its lock commits nothing and gc deletes nothing; a
// refresh that fails is logged, retried, and the lock is lost only once refreshes have failed
// for the give-up time.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "fault_env.h"
#include "repo/gc.h"
#include "repo/lock.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::string_view kRemovedWords = "lock was removed by another process, operation aborted";

class LockLostTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path = dir.sub("repo");
        auto r = init_small(path, &env);
        ASSERT_TRUE(r);
        repo = std::move(*r);
    }
    void TearDown() override { set_lock_refresh_interval_for_tests(0); }

    std::size_t lock_files() {
        std::size_t n = 0;
        for (const auto& e : fs::directory_iterator(path + "/locks")) n += e.is_regular_file();
        return n;
    }
    std::size_t pack_files() {
        std::size_t n = 0;
        for (const auto& e : fs::recursive_directory_iterator(path + "/data"))
            n += e.is_regular_file();
        return n;
    }
    // What another host's `vmshadow repo unlock --remove-all` does.
    void remove_all_locks() {
        auto removed = remove_locks(Env::posix(), path, true);
        ASSERT_TRUE(removed) << removed.error().message();
        ASSERT_FALSE(removed->empty());
    }

    TempDir dir;
    FaultEnv env;
    std::string path;
    std::unique_ptr<Repository> repo;
};

// Waits up to 10 s for `done`.
template <typename F>
bool eventually(F done) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

TEST_F(LockLostTest, ALockRemovedByAnotherProcessIsNotWrittenAgainAndItsHolderIsTold) {
    set_lock_refresh_interval_for_tests(50);
    auto lock = repo->lock(LockMode::exclusive, "gc");
    ASSERT_TRUE(lock);
    std::mutex mu;
    std::optional<Error> told;
    (*lock)->on_lost([&](const Error& e) {
        std::lock_guard g(mu);
        told = e;
    });
    EXPECT_TRUE((*lock)->held());
    remove_all_locks();
    ASSERT_TRUE(eventually([&] { return !(*lock)->held(); })) << "the holder never noticed";
    auto st = (*lock)->held();
    EXPECT_EQ(st.error().kind(), ErrorKind::locked);
    EXPECT_NE(st.error().message().find(kRemovedWords), std::string::npos) << st.error().message();
    EXPECT_NE(st.error().message().find("`gc`"), std::string::npos) << st.error().message();
    {
        std::lock_guard g(mu);
        ASSERT_TRUE(told);
        EXPECT_EQ(told->message(), st.error().message());
    }
    std::this_thread::sleep_for(300ms);  // six refresh intervals
    EXPECT_EQ(lock_files(), 0u) << "the lost lock was written again";
    // Whoever removed it may lock the repository now.
    EXPECT_TRUE(repo->lock(LockMode::exclusive, "gc"));
}

// A backup cleans up under the exclusive lock, then lets others in: a removal in between must
// not be undone by the downgrade's rewrite.
TEST_F(LockLostTest, ALockRemovedBeforeItsDowngradeIsLostNotWrittenAgain) {
    auto lock = repo->lock(LockMode::exclusive, "image backup");
    ASSERT_TRUE(lock);
    remove_all_locks();
    auto st = (*lock)->downgrade();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find(kRemovedWords), std::string::npos) << st.error().message();
    EXPECT_EQ(lock_files(), 0u);
}

TEST_F(LockLostTest, VerifySeesARemovalTheRefresherHasNotSeenYet) {
    auto lock = repo->lock(LockMode::shared, "image backup");  // refreshes every 5 minutes
    ASSERT_TRUE(lock);
    EXPECT_TRUE((*lock)->verify());
    remove_all_locks();
    EXPECT_TRUE((*lock)->held()) << "nothing asked the store yet";
    auto st = (*lock)->verify();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find(kRemovedWords), std::string::npos);
    EXPECT_FALSE((*lock)->held());
    bool told = false;
    (*lock)->on_lost([&](const Error&) { told = true; });
    EXPECT_TRUE(told) << "a callback registered after the loss is called at once";
}

TEST_F(LockLostTest, ABackupWhoseLockWasRemovedCommitsNothing) {
    Bytes disk = random_data(64 * 4096, 7);
    auto session = BackupSession::begin(*repo, {});
    ASSERT_TRUE(session);
    PointBuilder& point = (*session)->add_point("web", "crash");
    auto writer = point.add_disk("vda", disk.size(), nullptr);
    ASSERT_TRUE(writer);
    ASSERT_TRUE((*writer)->write(0, Bytes(disk)));
    ASSERT_TRUE((*writer)->finish());
    remove_all_locks();
    auto committed = (*session)->commit();
    ASSERT_FALSE(committed);
    EXPECT_EQ(committed.error().kind(), ErrorKind::locked);
    EXPECT_NE(committed.error().message().find(kRemovedWords), std::string::npos)
        << committed.error().message();
    session->reset();
    auto listing = repo->list_points();
    ASSERT_TRUE(listing);
    EXPECT_TRUE(listing->points.empty());
    EXPECT_TRUE(fs::is_empty(path + "/index")) << "an index file was published";
    EXPECT_EQ(lock_files(), 0u);
}

TEST_F(LockLostTest, ABackupStopsAtItsNextWriteOnceTheRefresherSeesItsLockGone) {
    set_lock_refresh_interval_for_tests(50);
    auto session = BackupSession::begin(*repo, {});
    ASSERT_TRUE(session);
    PointBuilder& point = (*session)->add_point("web", "crash");
    auto writer = point.add_disk("vda", 1 << 20, nullptr);
    ASSERT_TRUE(writer);
    ASSERT_TRUE((*writer)->write(0, random_data(65536, 1)));
    remove_all_locks();
    ASSERT_TRUE(eventually([&] { return (*session)->error().has_value(); }))
        << "the session was not told";
    auto st = (*writer)->write(65536, random_data(65536, 2));
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find(kRemovedWords), std::string::npos) << st.error().message();
    EXPECT_FALSE((*session)->commit());
    session->reset();
    EXPECT_TRUE(fs::is_empty(path + "/commits"));
}

// Removes every lock when gc enters its mark phase, as another host's unlock would.
struct UnlockAtMark : ProgressSink {
    explicit UnlockAtMark(std::string repo) : repo(std::move(repo)) {}
    void update(const Progress& p) override {
        if (p.phase == "mark" && !done) done = remove_locks(Env::posix(), repo, true).has_value();
    }
    std::string repo;
    bool done = false;
};

TEST_F(LockLostTest, GcWhoseLockWasRemovedDeletesNothing) {
    auto doomed = backup_bytes(*repo, "junk", {{"vda", random_data(32 * 4096, 3)}});
    ASSERT_TRUE(doomed);
    ASSERT_TRUE(backup_bytes(*repo, "keep", {{"vda", random_data(32 * 4096, 4)}}));
    ASSERT_TRUE(repo->forget({doomed->id}));
    const std::size_t packs = pack_files();
    UnlockAtMark unlock(path);
    TaskContext task(&unlock, nullptr, CancelToken(), system_clock());
    auto report = collect_garbage(*repo, {.grace_seconds = 0, .task = &task});
    ASSERT_TRUE(unlock.done);
    ASSERT_FALSE(report);
    EXPECT_EQ(report.error().kind(), ErrorKind::locked);
    EXPECT_NE(report.error().message().find(kRemovedWords), std::string::npos)
        << report.error().message();
    EXPECT_EQ(pack_files(), packs) << "gc deleted packs under a lock it no longer held";
    // With the lock its own again, the same gc frees the forgotten point's packs.
    auto again = collect_garbage(*repo, {.grace_seconds = 0});
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_LT(pack_files(), packs);
}

struct Lines {
    void add(const std::string& line) {
        std::lock_guard g(mu);
        lines.push_back(line);
    }
    std::size_t count() {
        std::lock_guard g(mu);
        return lines.size();
    }
    std::string first() {
        std::lock_guard g(mu);
        return lines.empty() ? std::string() : lines.front();
    }
    std::mutex mu;
    std::vector<std::string> lines;
};

TEST_F(LockLostTest, AFailedRefreshIsLoggedAndRetriedAndTheLockSurvivesWhenOneSucceeds) {
    set_lock_refresh_interval_for_tests(200);  // retries every 40 ms, gives up after 1 s
    Lines log;
    auto lock = RepoLock::acquire(env, path, LockMode::shared, "image backup", {},
                                  [&](const std::string& line) { log.add(line); });
    ASSERT_TRUE(lock);
    env.fill_disk_at(1);
    ASSERT_TRUE(eventually([&] { return log.count() >= 3; })) << "no warnings";
    env.fill_disk_at(0);
    EXPECT_NE(log.first().find("warning: cannot refresh the repository lock"), std::string::npos)
        << log.first();
    EXPECT_NE(log.first().find("No space left on device"), std::string::npos) << log.first();
    EXPECT_NE(log.first().find("retrying"), std::string::npos) << log.first();
    std::this_thread::sleep_for(1500ms);  // past the give-up time, refreshes succeeding again
    EXPECT_TRUE((*lock)->held());
    EXPECT_EQ(lock_files(), 1u);
}

TEST_F(LockLostTest, ALockThatCannotBeRefreshedForTheGiveUpTimeIsLost) {
    set_lock_refresh_interval_for_tests(200);
    Lines log;
    auto lock = RepoLock::acquire(env, path, LockMode::shared, "image backup", {},
                                  [&](const std::string& line) { log.add(line); });
    ASSERT_TRUE(lock);
    const auto since = std::chrono::steady_clock::now();
    env.fill_disk_at(1);
    ASSERT_TRUE(eventually([&] { return !(*lock)->held(); }));
    env.fill_disk_at(0);
    // Not before the give-up time: 25 of the 30 minutes, here 5 refresh intervals.
    EXPECT_GE(std::chrono::steady_clock::now() - since, 1000ms);
    auto st = (*lock)->held();
    EXPECT_EQ(st.error().kind(), ErrorKind::locked);
    EXPECT_NE(st.error().message().find("could not be refreshed"), std::string::npos)
        << st.error().message();
    EXPECT_NE(st.error().message().find("operation aborted"), std::string::npos);
    EXPECT_NE(st.error().message().find("No space left on device"), std::string::npos);
    EXPECT_GE(log.count(), 5u);
}

}  // namespace
}  // namespace vmshadow::repo::test
