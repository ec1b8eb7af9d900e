// SPDX-License-Identifier: MIT
// Crash safety, proven deterministically: backup, prune and gc are "killed" at every write,
// fsync, rename, unlink and mkdir they perform. After each crash, every earlier restore point
// must restore bit-exact, the next run must succeed, and after it no leftovers may remain
// (temp files, locks, packs no index names).

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "fault_env.h"
#include "repo/check.h"
#include "repo/gc.h"
#include "repo_test_util.h"

namespace vmshadow::repo::test {
namespace {

namespace fs = std::filesystem;
constexpr std::uint64_t kPackSize = 24 * 1024;  // several packs per backup

struct Scenario {
    TempDir dir;
    std::string template_repo;
    std::map<std::string, Bytes> content;  // vm → disk content of its newest point
    std::map<Hash256, Bytes> expected;     // point id → disk content
};

void build_template(Scenario& s) {
    s.template_repo = s.dir.sub("template");
    InitOptions init;
    init.chunk_size = 4096;
    init.map_fanout = 4;
    ASSERT_TRUE(Repository::init(s.template_repo, init));
    auto repo = open_plain(s.template_repo, nullptr, kPackSize);
    ASSERT_TRUE(repo);
    for (int round = 0; round < 2; ++round)
        for (std::string vm : {"web", "db"}) {
            Bytes data = text_data(20 * 4096, 100 + round * 7 + vm.size());
            Bytes noise = random_data(6 * 4096, 200 + round);
            std::copy(noise.begin(), noise.end(), data.begin() + 4 * 4096);
            std::fill(data.begin() + 12 * 4096, data.begin() + 15 * 4096, 0);  // a hole
            auto p = backup_bytes(**repo, vm, {{"vda", data}});
            ASSERT_TRUE(p) << p.error().message();
            s.expected[p->id] = data;
            s.content[vm] = data;
        }
}

std::string fresh_copy(const Scenario& s, int n) {
    std::string path = s.dir.sub("run" + std::to_string(n));
    fs::remove_all(path);
    fs::copy(s.template_repo, path, fs::copy_options::recursive);
    return path;
}

// Every listed point restores bit-exact; `required` points must be listed.
void verify_points(const std::string& path, const Scenario& s, const std::set<Hash256>& required,
                   const std::string& where) {
    auto repo = open_plain(path);
    ASSERT_TRUE(repo) << where;
    ASSERT_TRUE((*repo)->load_index()) << where;
    auto listing = (*repo)->list_points();
    ASSERT_TRUE(listing) << where;
    EXPECT_TRUE(listing->damaged.empty()) << where << ": " << listing->damaged.front().message();
    std::set<Hash256> seen;
    for (const auto& p : listing->points) {
        seen.insert(p.id);
        auto it = s.expected.find(p.id);
        if (it == s.expected.end()) continue;  // the point the crashed run was writing
        auto back = read_disk(**repo, p, "vda");
        ASSERT_TRUE(back) << where << ": point " << p.id.short_hex() << ": "
                          << back.error().message();
        EXPECT_TRUE(*back == it->second) << where << ": point " << p.id.short_hex();
    }
    for (const auto& id : required)
        EXPECT_TRUE(seen.contains(id)) << where << ": point " << id.short_hex() << " is gone";
}

void verify_no_leftovers(const std::string& path, const std::string& where) {
    EXPECT_TRUE(fs::is_empty(path + "/tmp")) << where << ": temp files left";
    EXPECT_TRUE(fs::is_empty(path + "/locks")) << where << ": locks left";
    auto repo = open_plain(path);
    ASSERT_TRUE(repo);
    CheckOptions co;
    co.read_data = true;
    auto report = check_repository(**repo, co);
    ASSERT_TRUE(report) << where;
    EXPECT_TRUE(report->ok()) << where << ": " << report->problems.front();
    EXPECT_TRUE(report->warnings.empty()) << where << ": " << report->warnings.front();
}

using Operation = std::function<Status(Repository&)>;

// Runs `op` once without faults to count its operations, then once per operation with a
// crash there. Returns how many crash points were exercised.
int crash_everywhere(Scenario& s, const std::string& name, const Operation& op,
                     const std::set<Hash256>& required, std::set<std::string>& kinds) {
    std::uint64_t total = 0;
    {
        std::string path = fresh_copy(s, 0);
        FaultEnv env;
        auto repo = open_plain(path, &env, kPackSize);
        EXPECT_TRUE(repo);
        Status st = op(**repo);
        EXPECT_TRUE(st) << name << ": " << st.error().message();
        total = env.operations();
    }
    EXPECT_GE(total, 10u) << name;
    for (std::uint64_t k = 1; k <= total; ++k) {
        std::string path = fresh_copy(s, static_cast<int>(k));
        std::string where = name + " crashed at operation " + std::to_string(k);
        {
            FaultEnv env(k);
            auto repo = open_plain(path, &env, kPackSize);
            EXPECT_TRUE(repo);
            Status st = op(**repo);
            EXPECT_TRUE(env.crashed()) << where;
            std::string last = env.log().empty() ? "" : env.log().back();
            kinds.insert(name + ": " + last.substr(0, last.find(' ')));
            where += " (" + last + ")";
            // Dying while removing our own lock after the commit is still a success: the
            // stale lock is broken by the next run.
            bool lock_release =
                last.starts_with("unlink ") && last.find("/locks/") != std::string::npos;
            EXPECT_TRUE(!st || lock_release) << where << " but reported success";
        }
        verify_points(path, s, required, where);
        {
            // The next run, without faults, succeeds and cleans up.
            auto repo = open_plain(path, nullptr, kPackSize);
            EXPECT_TRUE(repo);
            if (!repo) return -1000;
            Status st = op(**repo);
            EXPECT_TRUE(st) << where << ": next run failed: " << st.error().message();
            if (!st) return -1000;
        }
        verify_points(path, s, required, where + ", after the next run");
        verify_no_leftovers(path, where + ", after the next run");
        fs::remove_all(path);
    }
    return static_cast<int>(total);
}

TEST(FaultInjection, BackupPruneAndGcSurviveACrashAtEveryOperation) {
    VMSHADOW_SKIP_ON_BLOBS("crashes of the POSIX Env: the next run must see the same tmp/ folder");
    Scenario s;
    ASSERT_NO_FATAL_FAILURE(build_template(s));
    std::set<Hash256> all;
    for (const auto& [id, data] : s.expected) all.insert(id);
    std::set<std::string> kinds;
    int points = 0;

    // Backup: a new point of "web" with a changed region (new chunks, map blocks, packs).
    Bytes changed = s.content["web"];
    Bytes noise = random_data(8 * 4096, 999);
    std::copy(noise.begin(), noise.end(), changed.begin());
    points += crash_everywhere(
        s, "backup",
        [&](Repository& repo) -> Status {
            auto p = backup_bytes(repo, "web", {{"vda", changed}});
            if (!p) return std::unexpected(p.error());
            s.expected[p->id] = changed;
            return {};
        },
        all, kinds);

    // Prune: keep the newest point per VM; the older ones may go, the newest must stay.
    std::set<Hash256> newest;
    {
        auto repo = open_plain(s.template_repo);
        ASSERT_TRUE(repo);
        auto listing = (*repo)->list_points();
        ASSERT_TRUE(listing);
        std::map<std::string, Hash256> last;
        for (const auto& p : listing->points) last[p.vm] = p.id;
        for (const auto& [vm, id] : last) newest.insert(id);
    }
    points += crash_everywhere(
        s, "prune",
        [](Repository& repo) -> Status {
            auto r = prune(repo, KeepPolicy{.last = 1}, "", false, {.grace_seconds = 0});
            if (!r) return std::unexpected(r.error());
            return {};
        },
        newest, kinds);

    // gc with garbage: forget the oldest "db" point first (in the template).
    {
        auto repo = open_plain(s.template_repo);
        ASSERT_TRUE(repo);
        auto listing = (*repo)->list_points();
        ASSERT_TRUE(listing);
        for (const auto& p : listing->points)
            if (p.vm == "db" && !newest.contains(p.id)) {
                ASSERT_TRUE((*repo)->forget({p.id}));
                all.erase(p.id);
                break;
            }
    }
    points += crash_everywhere(
        s, "gc",
        [](Repository& repo) -> Status {
            GcOptions o;
            o.repack_dead_fraction = 0.0;  // rewrite every pack with any garbage
            o.grace_seconds = 0;           // and free what was just forgotten
            auto r = collect_garbage(repo, o);
            if (!r) return std::unexpected(r.error());
            return {};
        },
        all, kinds);

    EXPECT_GE(points, 50) << "distinct crash points";
    for (const char* kind : {"backup: write", "backup: fsync", "backup: rename", "prune: unlink",
                             "gc: write", "gc: rename", "gc: unlink"})
        EXPECT_TRUE(kinds.contains(kind)) << "no crash at a " << kind;
    std::string summary;
    for (const auto& k : kinds) summary += k + "; ";
    RecordProperty("crash_points", points);
    std::printf("crash points exercised: %d (%s)\n", points, summary.c_str());
}

TEST(FaultInjection, FullDiskDuringBackupIsAClearErrorAndEarlierPointsStayIntact) {
    Scenario s;
    ASSERT_NO_FATAL_FAILURE(build_template(s));
    std::string path = fresh_copy(s, 1);
    FaultEnv env;
    env.fill_disk_at(12);  // after the lock, mid-way through the packs
    auto repo = open_plain(path, &env, kPackSize);
    ASSERT_TRUE(repo);
    auto p = backup_bytes(**repo, "web", {{"vda", random_data(40 * 4096, 77)}});
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().kind(), ErrorKind::io);
    EXPECT_NE(p.error().message().find("No space left on device"), std::string::npos)
        << p.error().message();
    std::set<Hash256> all;
    for (const auto& [id, data] : s.expected) all.insert(id);
    verify_points(path, s, all, "after a full disk");
    // The failed session gave its space back and left no lock or temp file.
    verify_no_leftovers(path, "after a full disk");
}

TEST(FaultInjection, FullDiskDuringAThreadedBackupIsAClearErrorAndLeavesNothing) {
    // The same with workers: the failing write may happen on the pack finisher's thread.
    for (std::uint64_t at : {12u, 20u, 40u}) {
        Scenario s;
        ASSERT_NO_FATAL_FAILURE(build_template(s));
        std::string path = fresh_copy(s, 1);
        FaultEnv env;
        env.fill_disk_at(at);
        auto repo = open_plain(path, &env, kPackSize);
        ASSERT_TRUE(repo);
        auto p = backup_bytes(**repo, "web", {{"vda", random_data(400 * 4096, 78)}}, 2);
        ASSERT_FALSE(p) << "full disk at operation " << at;
        EXPECT_EQ(p.error().kind(), ErrorKind::io);
        std::set<Hash256> all;
        for (const auto& [id, data] : s.expected) all.insert(id);
        verify_points(path, s, all, "after a full disk in a threaded backup");
        verify_no_leftovers(path, "after a full disk in a threaded backup");
    }
}

}  // namespace
}  // namespace vmshadow::repo::test
