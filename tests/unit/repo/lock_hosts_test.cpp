// SPDX-License-Identifier: MIT
// Locks between hosts sharing one repository (S3): holders refresh their lock, another host's
// lock not refreshed for 30 minutes is stale (named, and removed by plain `repo unlock`), a
// fresh one is not; --retry-lock waits for a holder instead of failing.
#include <gtest/gtest.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/time_format.h"
#include "repo/lock.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;

class LockHostsTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path = dir.sub("repo");
        auto r = init_small(path);
        ASSERT_TRUE(r);
        repo = std::move(*r);
    }
    void TearDown() override { set_lock_refresh_interval_for_tests(0); }

    // A lock of another host, last refreshed `age` seconds ago (its object's time too).
    void plant_foreign(const std::string& id, std::int64_t age, bool exclusive = true) {
        std::int64_t then = ::time(nullptr) - age;
        std::string file = path + "/locks/" + id;
        fs::create_directories(path + "/locks");
        std::ofstream(file) << nlohmann::json{
            {"version", 1},
            {"pid", 4242},
            {"host", "elsewhere.example"},
            {"exclusive", exclusive},
            {"operation", "backup"},
            {"time", iso8601_utc(then)},
            {"refreshed",
             iso8601_utc(then)}}.dump();
        struct timeval times[2] = {{static_cast<time_t>(then), 0}, {static_cast<time_t>(then), 0}};
        ASSERT_EQ(::utimes(file.c_str(), times), 0);
    }
    bool present(const std::string& id) { return fs::exists(path + "/locks/" + id); }

    TempDir dir;
    std::string path;
    std::unique_ptr<Repository> repo;
};

TEST_F(LockHostsTest, AnotherHostsLockNotRefreshedFor30MinutesIsNamedStaleAndPlainUnlockRemovesIt) {
    plant_foreign("stale000", kLockStaleSeconds + 120);
    auto lock = repo->lock(LockMode::exclusive, "gc");
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().kind(), ErrorKind::locked);
    EXPECT_NE(lock.error().message().find("stale"), std::string::npos) << lock.error().message();
    EXPECT_NE(lock.error().message().find("elsewhere.example"), std::string::npos);
    EXPECT_NE(lock.error().message().find("`vmshadow repo unlock`"), std::string::npos);
    auto listed = list_locks(repo->env(), path);
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_TRUE((*listed)[0].stale);
    auto removed = remove_locks(repo->env(), path, false);
    ASSERT_TRUE(removed);
    ASSERT_EQ(removed->size(), 1u);
    EXPECT_FALSE(present("stale000"));
    EXPECT_TRUE(repo->lock(LockMode::exclusive, "gc"));
}

TEST_F(LockHostsTest, AnotherHostsLockRefreshedRecentlyIsHeldAndOnlyRemoveAllRemovesIt) {
    plant_foreign("fresh000", kLockStaleSeconds - 300);
    auto lock = repo->lock(LockMode::exclusive, "gc");
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().message().find("stale"), std::string::npos) << lock.error().message();
    auto removed = remove_locks(repo->env(), path, false);
    ASSERT_TRUE(removed);
    EXPECT_TRUE(removed->empty());
    EXPECT_TRUE(present("fresh000"));
    ASSERT_TRUE(remove_locks(repo->env(), path, true));
    EXPECT_FALSE(present("fresh000"));
}

TEST_F(LockHostsTest, AHolderRefreshesItsLockWhileItHoldsIt) {
    set_lock_refresh_interval_for_tests(100);
    auto lock = repo->lock(LockMode::shared, "backup");
    ASSERT_TRUE(lock);
    // A refresh stores the lock under a new name before it removes the old one: between the
    // two, and while a file goes, the listing is asked again.
    auto refreshed = [&] {
        for (int attempt = 0; attempt < 100; ++attempt) {
            auto names = repo->env().list(path + "/locks");
            if (!names || names->size() != 1) continue;
            auto bytes = read_file(repo->env(), path + "/locks/" + names->front());
            if (!bytes) continue;
            return nlohmann::json::parse(bytes->begin(), bytes->end())["refreshed"]
                .get<std::string>();
        }
        ADD_FAILURE() << "never exactly one lock file";
        return std::string();
    };
    std::string first = refreshed();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (refreshed() == first && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_NE(refreshed(), first) << "the lock was not refreshed";
    ASSERT_TRUE((*lock)->release());
    auto left = repo->env().list(path + "/locks");
    ASSERT_TRUE(left);
    EXPECT_TRUE(left->empty()) << "a refresh after release brought the lock back";
}

TEST_F(LockHostsTest, RetryLockWaitsForTheHolderAndGivesUpAfterItsDuration) {
    auto held = repo->lock(LockMode::exclusive, "gc");
    ASSERT_TRUE(held);
    auto short_wait =
        RepoLock::acquire(repo->env(), path, LockMode::shared, "backup", std::chrono::seconds(1));
    ASSERT_FALSE(short_wait);
    EXPECT_EQ(short_wait.error().kind(), ErrorKind::locked);
    EXPECT_NE(short_wait.error().message().find("waited 1 s"), std::string::npos);
    std::thread releaser([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        (void)(*held)->release();
    });
    auto waited =
        RepoLock::acquire(repo->env(), path, LockMode::shared, "backup", std::chrono::seconds(20));
    releaser.join();
    EXPECT_TRUE(waited) << waited.error().message();
}

// nbdkit forks into the background holding the lock it took before, and its child lets go of
// that copy: the refresher thread exists only in the parent, so the child must not wait for it.
TEST_F(LockHostsTest, AChildForkedWhileALockIsHeldLetsGoOfItsCopyWithoutHanging) {
    set_lock_refresh_interval_for_tests(1);  // the thread is busy refreshing at the fork
    auto lock = repo->lock(LockMode::shared, "nbd export");
    ASSERT_TRUE(lock);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::alarm(10);  // a hang ends as SIGALRM, which the parent sees
        lock->reset();
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    EXPECT_TRUE((*lock)->release());
}

}  // namespace
}  // namespace vmshadow::repo::test
