// SPDX-License-Identifier: MIT
// `repo unlock`: locks of dead processes on this host go, live ones and other hosts' stay;
// with --remove-all every lock goes. A lock of another host says how to remove it.
#include "repo/lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/process.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;

std::string this_host() {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    return host;
}

// As lock files record it.
std::string start_time_of(pid_t pid) {
    return process_start_time(pid);
}

class UnlockTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path = dir.sub("repo");
        auto r = init_small(path);
        ASSERT_TRUE(r);
        repo = std::move(*r);
        // A process that is alive while the test runs, and one that is gone.
        live = fork();
        if (live == 0) {
            ::pause();
            _exit(0);
        }
        dead = fork();
        if (dead == 0) _exit(0);
        waitpid(dead, nullptr, 0);
    }
    void TearDown() override {
        ::kill(live, SIGKILL);
        waitpid(live, nullptr, 0);
    }

    void plant(const std::string& id, const std::string& host, pid_t pid,
               const std::string& start_time, const std::string& operation) {
        std::ofstream(path + "/locks/" + id) << nlohmann::json{{"pid", pid},
                                                               {"start_time", start_time},
                                                               {"host", host},
                                                               {"exclusive", true},
                                                               {"operation", operation},
                                                               {"time", "2026-11-22T01:00:00Z"}}
                                                    .dump();
    }
    bool present(const std::string& id) const { return fs::exists(path + "/locks/" + id); }

    TempDir dir;
    std::string path;
    std::unique_ptr<Repository> repo;
    pid_t live = 0, dead = 0;
};

TEST_F(UnlockTest, RemovesDeadLocksOfThisHostAndKeepsLiveAndForeignOnes) {
    auto held = repo->lock(LockMode::shared, "image restore");  // a live lock of this process
    ASSERT_TRUE(held) << held.error().message();
    plant("dead0000", this_host(), dead, "1", "gc");
    plant("reused00", this_host(), live, "1", "prune");  // the pid now names another process
    plant("live0000", this_host(), live, start_time_of(live), "image backup");
    plant("foreign0", "elsewhere.example", dead, "1", "forget");

    auto removed = remove_locks(repo->env(), path, false);
    ASSERT_TRUE(removed) << removed.error().message();
    std::set<std::string> ids;
    for (const auto& l : *removed) {
        ids.insert(l.id);
        EXPECT_TRUE(l.holder_dead);
    }
    EXPECT_EQ(ids, (std::set<std::string>{"dead0000", "reused00"}));
    EXPECT_FALSE(present("dead0000"));
    EXPECT_FALSE(present("reused00"));
    EXPECT_TRUE(present("live0000"));
    EXPECT_TRUE(present("foreign0"));

    auto left = list_locks(repo->env(), path);
    ASSERT_TRUE(left);
    ASSERT_EQ(left->size(), 3u);  // live0000, foreign0 and the held one
    for (const auto& l : *left) EXPECT_FALSE(l.holder_dead) << l.id;
}

// A holder that exited but was never reaped (this host's init reaps nothing) has ended: its
// lock is stale, with or without a start time.
TEST_F(UnlockTest, ALockWhoseHolderIsAZombieIsStale) {
    pid_t zombie = fork();
    if (zombie == 0) {
        ::pause();
        _exit(0);
    }
    ASSERT_GT(zombie, 0);
    std::string started = start_time_of(zombie);
    ASSERT_FALSE(started.empty());
    ::kill(zombie, SIGKILL);
    siginfo_t info{};
    ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(zombie), &info, WEXITED | WNOWAIT), 0);
    plant("zombie00", this_host(), zombie, started, "backup");
    plant("zombie01", this_host(), zombie, "", "backup");  // an older vmshadow's lock
    auto removed = remove_locks(repo->env(), path, false);
    ::waitpid(zombie, nullptr, 0);
    ASSERT_TRUE(removed) << removed.error().message();
    EXPECT_EQ(removed->size(), 2u);
    EXPECT_FALSE(present("zombie00"));
    EXPECT_FALSE(present("zombie01"));
}

// A temp file is named after its writer's pid; a writer that is gone or a zombie writes no
// more, so its file is a leftover, while a running writer's file stays.
TEST_F(UnlockTest, LeftoverTempFilesOfGoneOrZombieWritersGoAndALiveWritersStay) {
    VMSHADOW_SKIP_ON_BLOBS("the object Env spools tmp/ in a folder of its own");
    pid_t zombie = fork();
    if (zombie == 0) _exit(0);
    ASSERT_GT(zombie, 0);
    siginfo_t info{};
    ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(zombie), &info, WEXITED | WNOWAIT), 0);
    auto temp = [&](pid_t pid) { return path + "/tmp/lock-" + std::to_string(pid) + "-1"; };
    for (pid_t pid : {live, dead, zombie}) std::ofstream(temp(pid)) << "x";
    auto removed = repo->cleanup_leftovers();
    ::waitpid(zombie, nullptr, 0);
    ASSERT_TRUE(removed) << removed.error().message();
    EXPECT_TRUE(fs::exists(temp(live)));
    EXPECT_FALSE(fs::exists(temp(dead)));
    EXPECT_FALSE(fs::exists(temp(zombie)));
}

TEST_F(UnlockTest, RemoveAllRemovesEveryLockAndSaysWhoHeldIt) {
    plant("dead0000", this_host(), dead, "1", "gc");
    plant("live0000", this_host(), live, start_time_of(live), "image backup");
    plant("foreign0", "elsewhere.example", 4242, "1", "forget");
    std::ofstream(path + "/locks/garbage0") << "not json";
    auto removed = remove_locks(repo->env(), path, true);
    ASSERT_TRUE(removed) << removed.error().message();
    EXPECT_EQ(removed->size(), 4u);
    EXPECT_TRUE(fs::is_empty(path + "/locks"));
    bool foreign = false, unreadable = false;
    for (const auto& l : *removed) {
        if (l.id == "foreign0") {
            foreign = true;
            EXPECT_EQ(l.host, "elsewhere.example");
            EXPECT_EQ(l.pid, 4242);
            EXPECT_EQ(l.operation, "forget");
            EXPECT_EQ(l.since, 1795309200);  // 2026-11-22T01:00:00Z
            EXPECT_FALSE(l.holder_dead);
        }
        if (l.id == "garbage0") unreadable = !l.readable;
    }
    EXPECT_TRUE(foreign && unreadable);
    // The repository is free again.
    auto lock = repo->lock(LockMode::exclusive, "gc");
    EXPECT_TRUE(lock) << lock.error().message();
}

TEST_F(UnlockTest, LockOfAnotherHostNamesUnlockRemoveAllAsTheWayOut) {
    plant("foreign0", "elsewhere.example", 4242, "1", "gc");
    auto lock = repo->lock(LockMode::shared, "image backup");
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().kind(), ErrorKind::locked);
    EXPECT_NE(lock.error().message().find("vmshadow repo unlock --remove-all"), std::string::npos)
        << lock.error().message();
    EXPECT_NE(lock.error().message().find("elsewhere.example"), std::string::npos);
}

TEST_F(UnlockTest, LockOfALiveProcessOfThisHostDoesNotSuggestRemovingIt) {
    plant("live0000", this_host(), live, start_time_of(live), "gc");
    auto lock = repo->lock(LockMode::shared, "image backup");
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().message().find("unlock"), std::string::npos) << lock.error().message();
}

// Every kind of lock file vmshadow cannot read: each is held until `unlock --remove-all`.
TEST_F(UnlockTest, UnreadableLockIsHeldByEveryLockUntilRemoveAllRemovesIt) {
    nlohmann::json sound{{"pid", 4242},         {"start_time", "1"},
                         {"host", this_host()}, {"exclusive", false},
                         {"operation", "gc"},   {"time", "2026-11-22T01:00:00Z"}};
    auto without = [&](const char* key) {
        auto j = sound;
        j.erase(key);
        return j.dump();
    };
    auto with = [&](const char* key, nlohmann::json value) {
        auto j = sound;
        j[key] = std::move(value);
        return j.dump();
    };
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"empty", ""},
        {"garbage", "not json at all"},
        {"truncated", sound.dump().substr(0, 20)},
        {"array", "[1,2,3]"},
        {"empty object", "{}"},
        {"no host", without("host")},
        {"no pid", without("pid")},
        {"no exclusive", without("exclusive")},
        {"pid a string", with("pid", "4242")},
        {"pid zero", with("pid", 0)},
        {"pid negative", with("pid", -5)},
        {"pid huge", with("pid", 1e300)},
        {"host a number", with("host", 7)},
        {"exclusive a string", with("exclusive", "no")},
        {"newer version", with("version", 2)},
        {"version a string", with("version", "1")},
    };
    for (const auto& [what, text] : cases) {
        SCOPED_TRACE(what);
        std::ofstream(path + "/locks/bad00000") << text;
        for (LockMode mode : {LockMode::exclusive, LockMode::shared}) {
            auto lock = repo->lock(mode, "gc");
            ASSERT_FALSE(lock);
            EXPECT_EQ(lock.error().kind(), ErrorKind::locked);
            EXPECT_NE(lock.error().message().find(path + "/locks/bad00000"), std::string::npos)
                << lock.error().message();
            EXPECT_NE(lock.error().message().find("vmshadow repo unlock --remove-all"),
                      std::string::npos)
                << lock.error().message();
        }
        auto listed = list_locks(repo->env(), path);
        ASSERT_TRUE(listed);
        ASSERT_EQ(listed->size(), 1u);
        EXPECT_FALSE((*listed)[0].readable);
        auto kept = remove_locks(repo->env(), path, false);
        ASSERT_TRUE(kept);
        EXPECT_TRUE(kept->empty());
        EXPECT_TRUE(present("bad00000")) << "plain unlock keeps an unreadable lock";
        auto removed = remove_locks(repo->env(), path, true);
        ASSERT_TRUE(removed);
        EXPECT_EQ(removed->size(), 1u);
        EXPECT_FALSE(present("bad00000"));
        auto lock = repo->lock(LockMode::exclusive, "gc");
        EXPECT_TRUE(lock) << lock.error().message();
    }
}

TEST_F(UnlockTest, LockOfALiveProcessIsHeldWhateverItsTimeAndHost) {
    // A time in the future (another host's clock) changes nothing: the holder decides.
    std::ofstream(path + "/locks/future00")
        << nlohmann::json{{"pid", live},         {"start_time", start_time_of(live)},
                          {"host", this_host()}, {"exclusive", true},
                          {"operation", "gc"},   {"time", "2099-01-01T00:00:00Z"}}
               .dump();
    auto lock = repo->lock(LockMode::shared, "image backup");
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().kind(), ErrorKind::locked);
    auto kept = remove_locks(repo->env(), path, false);
    ASSERT_TRUE(kept);
    EXPECT_TRUE(kept->empty());
    fs::remove(path + "/locks/future00");
    // A live pid of this host without a start time: it can't be told from a reused pid, so
    // it holds the lock rather than being broken.
    std::ofstream(path + "/locks/nostart0") << nlohmann::json{
        {"pid", live},
        {"host", this_host()},
        {"exclusive", false},
        {"operation", "image backup"},
        {"time", "2026-11-22T01:00:00Z"}}.dump();
    auto blocked = repo->lock(LockMode::exclusive, "gc");
    ASSERT_FALSE(blocked);
    EXPECT_EQ(blocked.error().kind(), ErrorKind::locked);
    EXPECT_TRUE(present("nostart0"));
    fs::remove(path + "/locks/nostart0");
    // A live pid on another host: not this host's process, never judged stale.
    plant("foreign0", "elsewhere.example", live, start_time_of(live), "prune");
    auto again = repo->lock(LockMode::exclusive, "gc");
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::locked);
    EXPECT_TRUE(present("foreign0"));
}

TEST_F(UnlockTest, LockFilesOfThisBuildCarryTheirVersionAndAreReadable) {
    auto held = repo->lock(LockMode::exclusive, "gc");
    ASSERT_TRUE(held);
    auto listed = list_locks(repo->env(), path);
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_TRUE((*listed)[0].readable);
    std::ifstream in(path + "/locks/" + (*listed)[0].id);
    auto j = nlohmann::json::parse(in);
    EXPECT_EQ(j["version"], 1);
}

}  // namespace
}  // namespace vmshadow::repo::test
