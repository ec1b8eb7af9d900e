// SPDX-License-Identifier: MIT
#include "daemon/task_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "unit/common/temp_dir.h"

namespace vmshadow::daemon {
namespace {

using namespace std::chrono_literals;
using test::TempDir;

const Clock::time_point kStart = std::chrono::sys_days{std::chrono::year{2026} / 12 / 1};

struct TaskStoreTest : ::testing::Test {
    TempDir dir;
    ManualClock clock{kStart};
    std::filesystem::path file = dir.path / "state.db";

    std::unique_ptr<TaskStore> open() {
        auto store = TaskStore::open(file, clock);
        EXPECT_TRUE(store) << (store ? "" : store.error().message());
        return store ? std::move(*store) : nullptr;
    }
    std::int64_t ended_task(TaskStore& store, TaskState state = TaskState::ok) {
        auto id = store.create("backup", "nightly", "web1", "schedule");
        EXPECT_TRUE(id);
        EXPECT_TRUE(store.mark_running(*id));
        EXPECT_TRUE(store.finish(*id, state, "{}", std::nullopt));
        return *id;
    }
};

TEST_F(TaskStoreTest, CreateRunFinishRoundTrip) {
    auto store = open();
    auto id = store->create("backup", "nightly", "web1", "schedule");
    ASSERT_TRUE(id);
    auto queued = store->get(*id);
    ASSERT_TRUE(queued && *queued);
    EXPECT_EQ((*queued)->state, TaskState::queued);
    EXPECT_EQ((*queued)->queued_at, unix_seconds(kStart));
    EXPECT_EQ((*queued)->started_at, 0);

    clock.advance(5s);
    ASSERT_TRUE(store->mark_running(*id));
    clock.advance(60s);
    Error error(ErrorKind::not_found, "vm 'web1' not found");
    ASSERT_TRUE(store->finish(*id, TaskState::failed, R"({"points":[]})", error));

    auto ended = store->get(*id);
    ASSERT_TRUE(ended && *ended);
    const TaskRecord& t = **ended;
    EXPECT_EQ(t.kind, "backup");
    EXPECT_EQ(t.job, "nightly");
    EXPECT_EQ(t.target, "web1");
    EXPECT_EQ(t.trigger, "schedule");
    EXPECT_EQ(t.state, TaskState::failed);
    EXPECT_EQ(t.started_at, unix_seconds(kStart) + 5);
    EXPECT_EQ(t.ended_at, unix_seconds(kStart) + 65);
    EXPECT_EQ(t.result, R"({"points":[]})");
    EXPECT_EQ(t.error, "vm 'web1' not found");
    EXPECT_EQ(t.error_kind, "not_found");
}

TEST_F(TaskStoreTest, StateMovesOnlyForward) {
    auto store = open();
    auto id = store->create("verify", "", "web1", "api");
    ASSERT_TRUE(id);
    auto bad = store->finish(*id, TaskState::running, "", std::nullopt);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().kind(), ErrorKind::invalid_argument);
    auto cancelled = store->finish(*id, TaskState::cancelled, "", std::nullopt);
    ASSERT_TRUE(cancelled) << cancelled.error().message();
    auto again = store->finish(*id, TaskState::ok, "", std::nullopt);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::conflict);
    auto run = store->mark_running(*id);
    ASSERT_FALSE(run);
    EXPECT_EQ(run.error().kind(), ErrorKind::conflict);
    EXPECT_EQ(store->mark_running(999).error().kind(), ErrorKind::not_found);
    EXPECT_EQ(store->finish(999, TaskState::ok, "", std::nullopt).error().kind(),
              ErrorKind::not_found);
    auto missing = store->get(999);
    ASSERT_TRUE(missing);
    EXPECT_FALSE(*missing);
}

TEST_F(TaskStoreTest, LogLinesAreNumberedPerTaskAndReadInPages) {
    auto store = open();
    auto a = store->create("backup", "a", "web1", "api");
    auto b = store->create("backup", "b", "web2", "api");
    ASSERT_TRUE(a && b);
    for (int i = 1; i <= 25; ++i) {
        clock.advance(1s);
        auto n = store->append_log(*a, i % 5 == 0 ? LogLevel::warning : LogLevel::info,
                                   "line " + std::to_string(i));
        ASSERT_TRUE(n);
        EXPECT_EQ(*n, i);
    }
    EXPECT_EQ(store->append_log(*b, LogLevel::error, "other").value(), 1);

    auto page = store->log(*a, 11, 10);
    ASSERT_TRUE(page);
    ASSERT_EQ(page->size(), 10u);
    EXPECT_EQ(page->front().number, 11);
    EXPECT_EQ(page->front().text, "line 11");
    EXPECT_EQ(page->front().time, unix_seconds(kStart) + 11);
    EXPECT_EQ(page->back().number, 20);
    EXPECT_EQ(page->back().level, LogLevel::warning);
    EXPECT_EQ(store->log(*a, 21, 100)->size(), 5u);
    EXPECT_TRUE(store->log(*a, 26, 100)->empty());
    EXPECT_EQ(store->log(*a, 1, 0)->size(), 0u);
    EXPECT_EQ(store->get(*a).value()->log_lines, 25);
    EXPECT_EQ(store->log(*b, 1, 100)->front().level, LogLevel::error);
    EXPECT_EQ(store->log(999, 1, 10).error().kind(), ErrorKind::not_found);
    EXPECT_EQ(store->append_log(999, LogLevel::info, "x").error().kind(), ErrorKind::not_found);
}

TEST_F(TaskStoreTest, LongLogLineIsCutAt4KiB) {
    auto store = open();
    auto id = store->create("backup", "", "web1", "api");
    ASSERT_TRUE(id);
    // Multi-byte characters straddle the cut: it must not split one.
    std::string text;
    while (text.size() < 10000) text += "é";
    ASSERT_TRUE(store->append_log(*id, LogLevel::info, text));
    auto lines = store->log(*id, 1, 1);
    ASSERT_TRUE(lines && lines->size() == 1);
    const std::string& kept = lines->front().text;
    EXPECT_LE(kept.size(), 4096u);
    EXPECT_TRUE(kept.ends_with("[line truncated]"));
    EXPECT_EQ(kept.find("é [line"), kept.size() - std::string("é [line truncated]").size());
}

TEST_F(TaskStoreTest, LogStopsAfter100000LinesWithOneLineSayingSo) {
    auto store = open();
    auto id = store->create("backup", "", "web1", "api");
    ASSERT_TRUE(id);
    for (int i = 1; i <= 100000; ++i) ASSERT_EQ(store->append_log(*id, LogLevel::info, "x"), i);
    EXPECT_EQ(store->append_log(*id, LogLevel::info, "dropped"), 0);
    EXPECT_EQ(store->append_log(*id, LogLevel::info, "dropped too"), 0);
    auto tail = store->log(*id, 100000, 10);
    ASSERT_TRUE(tail);
    ASSERT_EQ(tail->size(), 2u);
    EXPECT_EQ(tail->back().number, 100001);
    EXPECT_EQ(tail->back().level, LogLevel::warning);
    EXPECT_NE(tail->back().text.find("truncated"), std::string::npos);
}

TEST_F(TaskStoreTest, OversizedResultIsReplacedByValidJson) {
    auto store = open();
    auto id = store->create("backup", "", "web1", "api");
    ASSERT_TRUE(id);
    std::string big = "\"" + std::string(2 * 1024 * 1024, 'x') + "\"";
    ASSERT_TRUE(store->finish(*id, TaskState::ok, big, std::nullopt));
    auto task = store->get(*id);
    ASSERT_TRUE(task && *task);
    EXPECT_EQ((*task)->result,
              R"({"bytes":)" + std::to_string(big.size()) + R"(,"truncated":true})");
}

TEST_F(TaskStoreTest, ProgressIsWrittenAtMostOncePerSecondAndAtFinish) {
    auto store = open();
    auto other = open();  // reads only the database: no in-memory progress
    auto id = store->create("backup", "", "web1", "api");
    ASSERT_TRUE(id);
    auto at = [&](TaskStore& s) { return s.get(*id).value()->progress.bytes_done; };
    auto progress = [](std::uint64_t done) {
        return Progress{
            .phase = "copy", .item = "web1/vda", .bytes_done = done, .bytes_total = 100};
    };

    store->set_progress(*id, progress(1));  // the first is written at once
    EXPECT_EQ(at(*other), 1u);
    clock.advance(500ms);
    store->set_progress(*id, progress(2));
    EXPECT_EQ(at(*store), 2u) << "get merges the latest, in memory";
    EXPECT_EQ(at(*other), 1u) << "written less than a second ago";
    auto listed = store->list({});
    ASSERT_TRUE(listed && listed->size() == 1);
    EXPECT_EQ(listed->front().progress.bytes_done, 2u);
    clock.advance(500ms);
    store->set_progress(*id, progress(3));
    EXPECT_EQ(at(*other), 3u);
    EXPECT_EQ(other->get(*id).value()->progress.item, "web1/vda");
    store->set_progress(*id, progress(4));
    EXPECT_EQ(at(*other), 3u);
    ASSERT_TRUE(store->finish(*id, TaskState::ok, "{}", std::nullopt));
    EXPECT_EQ(at(*other), 4u);
    store->set_progress(*id, progress(5));  // an ended task's progress no longer moves
    EXPECT_EQ(at(*store), 4u);
}

TEST_F(TaskStoreTest, ReopenKeepsEverything) {
    std::int64_t id = 0;
    {
        auto store = open();
        id = ended_task(*store);
        ASSERT_TRUE(store->append_log(id, LogLevel::info, "kept"));
        ASSERT_TRUE(store->set_job_slot("nightly", 1000));
        ASSERT_TRUE(store->record_vm_failure("web1", 2000));
    }
    auto store = open();
    auto task = store->get(id);
    ASSERT_TRUE(task && *task);
    EXPECT_EQ((*task)->state, TaskState::ok);
    EXPECT_EQ(store->log(id, 1, 10)->front().text, "kept");
    EXPECT_EQ(store->job_state("nightly")->last_slot, 1000);
    EXPECT_EQ(store->vm_states()->front().failures_total, 1u);
    EXPECT_GT(store->create("gc", "", "repo", "api").value(), id);
}

TEST_F(TaskStoreTest, KilledDaemonsTasksAreMarkedInterruptedOnReopen) {
    // A child process stands for the daemon: it leaves a running and a queued task and is
    // killed with SIGKILL, without closing anything.
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        auto store = TaskStore::open(file, clock);
        if (!store) ::_exit(1);
        auto running = (*store)->create("backup", "nightly", "web1", "schedule");
        auto queued = (*store)->create("backup", "nightly", "web2", "schedule");
        if (!running || !queued || !(*store)->mark_running(*running)) ::_exit(2);
        if (!(*store)->append_log(*running, LogLevel::info, "copying")) ::_exit(3);
        ::raise(SIGKILL);
        ::_exit(4);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

    auto store = open();
    clock.advance(1h);
    auto marked = store->mark_interrupted();
    ASSERT_TRUE(marked) << marked.error().message();
    ASSERT_EQ(marked->size(), 2u);
    for (const auto& task : *marked) {
        EXPECT_EQ(task.state, TaskState::interrupted);
        EXPECT_EQ(task.error, "the daemon stopped while this task ran");
        EXPECT_EQ(task.error_kind, "unavailable");
        EXPECT_EQ(task.ended_at, unix_seconds(kStart + 1h));
        auto stored = store->get(task.id);
        ASSERT_TRUE(stored && *stored);
        EXPECT_EQ((*stored)->state, TaskState::interrupted);
    }
    EXPECT_EQ(store->log((*marked)[0].id, 1, 10)->front().text, "copying");
    EXPECT_TRUE(store->mark_interrupted()->empty());
}

TEST_F(TaskStoreTest, PruneByCountKeepsNewestAndNeverQueuedOrRunning) {
    auto store = open();
    auto running = store->create("backup", "a", "web1", "api");
    auto queued = store->create("backup", "a", "web1", "api");
    ASSERT_TRUE(running && queued && store->mark_running(*running));
    std::vector<std::int64_t> ended;
    for (int i = 0; i < 6; ++i) ended.push_back(ended_task(*store));
    ASSERT_TRUE(store->append_log(ended[0], LogLevel::info, "old"));

    ASSERT_TRUE(store->prune_history(2, std::chrono::hours(24 * 365)));
    auto left = store->list({});
    ASSERT_TRUE(left);
    std::vector<std::int64_t> ids;
    for (const auto& t : *left) ids.push_back(t.id);
    EXPECT_EQ(ids, (std::vector<std::int64_t>{ended[5], ended[4], *queued, *running}));
    EXPECT_EQ(store->log(ended[0], 1, 10).error().kind(), ErrorKind::not_found);

    ASSERT_TRUE(store->prune_history(0, 0s));
    EXPECT_EQ(store->list({})->size(), 2u);
}

TEST_F(TaskStoreTest, PruneByAgeDeletesOnlyTasksEndedBeforeTheCutoff) {
    auto store = open();
    auto running = store->create("backup", "a", "web1", "api");
    ASSERT_TRUE(running && store->mark_running(*running));
    auto old_task = ended_task(*store);
    clock.advance(48h);
    auto recent = ended_task(*store);
    clock.advance(1h);
    ASSERT_TRUE(store->prune_history(100, 24h));
    EXPECT_FALSE(store->get(old_task).value());
    EXPECT_TRUE(store->get(recent).value());
    EXPECT_TRUE(store->get(*running).value());
}

TEST_F(TaskStoreTest, ListFiltersAndPages) {
    auto store = open();
    auto a1 = ended_task(*store, TaskState::failed);
    auto b = store->create("verify", "b", "web2", "api");
    auto a2 = store->create("backup", "nightly", "web1", "schedule");
    ASSERT_TRUE(b && a2);
    auto only = [&](TaskFilter f) {
        std::vector<std::int64_t> ids;
        auto listed = store->list(f);
        for (const auto& t : listed.value()) ids.push_back(t.id);
        return ids;
    };
    EXPECT_EQ(only({.state = TaskState::failed}), std::vector<std::int64_t>{a1});
    EXPECT_EQ(only({.job = "nightly"}), (std::vector<std::int64_t>{*a2, a1}));
    EXPECT_EQ(only({.kind = "verify"}), std::vector<std::int64_t>{*b});
    EXPECT_EQ(only({.before_id = *a2}), (std::vector<std::int64_t>{*b, a1}));
    EXPECT_EQ(only({.limit = 1}), std::vector<std::int64_t>{*a2});
}

TEST_F(TaskStoreTest, JobAndVmStateRoundTrip) {
    auto store = open();
    auto none = store->job_state("nightly");
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->last_slot || none->last_success || none->last_task);
    ASSERT_TRUE(store->set_job_slot("nightly", 100));
    ASSERT_TRUE(store->set_job_success("nightly", 150));
    ASSERT_TRUE(store->set_job_last_task("nightly", 7));
    ASSERT_TRUE(store->set_job_slot("nightly", 200));
    auto job = store->job_state("nightly");
    ASSERT_TRUE(job);
    EXPECT_EQ(job->last_slot, 200);
    EXPECT_EQ(job->last_success, 150);
    EXPECT_EQ(job->last_task, 7);
    EXPECT_FALSE(store->job_state("other")->last_slot);

    ASSERT_TRUE(store->record_vm_failure("web1", 50));
    VmBackupState web1{.vm = "web1",
                       .last_success = 100,
                       .last_duration_s = 12.5,
                       .last_bytes_added = 1ull << 40,
                       .last_freeze_ms = 230,
                       .last_point = "web1@2026-12-01T00:00:00Z",
                       .last_consistency = "application"};
    ASSERT_TRUE(store->record_vm_success(web1));
    ASSERT_TRUE(store->record_vm_failure("web1", 300));
    ASSERT_TRUE(store->record_vm_success({.vm = "db1", .last_success = 90}));
    auto vms = store->vm_states();
    ASSERT_TRUE(vms);
    ASSERT_EQ(vms->size(), 2u);
    EXPECT_EQ((*vms)[0].vm, "db1");
    EXPECT_EQ((*vms)[0].last_freeze_ms, -1);
    const VmBackupState& got = (*vms)[1];
    EXPECT_EQ(got.last_success, 100);
    EXPECT_DOUBLE_EQ(got.last_duration_s, 12.5);
    EXPECT_EQ(got.last_bytes_added, 1ull << 40);
    EXPECT_EQ(got.last_freeze_ms, 230);
    EXPECT_EQ(got.last_point, web1.last_point);
    EXPECT_EQ(got.last_consistency, "application");
    EXPECT_EQ(got.failures_total, 2u);
    EXPECT_EQ(got.last_failure, 300);
}

TEST_F(TaskStoreTest, ConcurrentAppendsGiveDenseUniqueNumbers) {
    // Two stores on one file (two connections, as two processes would be) and four threads on
    // each: the numbering must hold across connections, not only under one mutex.
    auto first = open();
    auto second = open();
    auto id = first->create("backup", "", "web1", "api");
    ASSERT_TRUE(id);
    constexpr int kThreads = 8, kLines = 50;
    std::vector<std::vector<std::int64_t>> numbers(kThreads);
    {
        std::vector<std::jthread> threads;
        for (int t = 0; t < kThreads; ++t) {
            threads.emplace_back([&, t] {
                TaskStore& store = t % 2 ? *second : *first;
                for (int i = 0; i < kLines; ++i) {
                    auto n = store.append_log(*id, LogLevel::info, std::to_string(t));
                    numbers[t].push_back(n ? *n : -1);
                }
            });
        }
    }
    std::vector<std::int64_t> all;
    for (const auto& n : numbers) all.insert(all.end(), n.begin(), n.end());
    std::sort(all.begin(), all.end());
    for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], std::int64_t(i) + 1);
    EXPECT_EQ(first->log(*id, 1, 1000)->size(), std::size_t(kThreads * kLines));
}

TEST_F(TaskStoreTest, GarbageFileIsCorruptionNotACrash) {
    std::ofstream(file) << std::string(8192, 'g');
    auto store = TaskStore::open(file, clock);
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::corruption);
    EXPECT_NE(store.error().message().find(file.string()), std::string::npos)
        << store.error().message();
}

TEST_F(TaskStoreTest, DamagedSchemaPageIsCorruptionNotACrash) {
    {
        auto store = open();
        ended_task(*store);
    }
    {
        // Page 1 past SQLite's 100-byte header holds the schema table's b-tree.
        std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(100);
        f << std::string(3000, '\xA5');
    }
    auto store = TaskStore::open(file, clock);
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::corruption) << store.error().message();
}

TEST_F(TaskStoreTest, MissingFolderIsNotFoundNamingIt) {
    auto store = TaskStore::open(dir.path / "absent" / "state.db", clock);
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::not_found);
    EXPECT_NE(store.error().message().find("absent"), std::string::npos);
}

TEST_F(TaskStoreTest, ForeignSqliteDatabaseIsRefused) {
    {
        sqlite3* db = nullptr;
        ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
        EXPECT_EQ(sqlite3_exec(db, "CREATE TABLE tasks (x)", nullptr, nullptr, nullptr), SQLITE_OK);
        sqlite3_close(db);
    }
    auto store = TaskStore::open(file, clock);
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::unsupported);
}

TEST_F(TaskStoreTest, NewerSchemaVersionIsUnsupported) {
    { ASSERT_TRUE(open()); }
    {
        sqlite3* db = nullptr;
        ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
        EXPECT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr),
                  SQLITE_OK);
        sqlite3_close(db);
    }
    auto store = TaskStore::open(file, clock);
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::unsupported);
    EXPECT_NE(store.error().message().find(file.string()), std::string::npos);
    EXPECT_NE(store.error().message().find("99"), std::string::npos);
}

}  // namespace
}  // namespace vmshadow::daemon
