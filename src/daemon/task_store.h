// SPDX-License-Identifier: MIT
#pragma once
// TaskStore: the daemon's memory of what ran — every task (a run of a job, a restore, a
// verify asked through the API) with its state, times, result and append-only log — and of
// each job's schedule (the last slot handled, the last success), in one SQLite database
// (<state-dir>/state.db, WAL mode) that survives a restart and a kill -9.
//
// This module is: creating tasks (queued), moving them through their states, keeping their
// latest progress, appending log lines (numbered from 1 per task) and reading them in pages
// from a line number; listing and getting tasks; at start-up, marking what a dead daemon
// left queued or running as `interrupted`; trimming history by count and age (never a task
// that is queued or running); per-job schedule state and per-VM last success (for alerts
// and GET /vms).
// It is not: the scheduler or the runner; it does not decide when anything runs.
//
// Thread-safety: every method may be called from any thread (one connection, serialized
// by a mutex; SQLite's own locking keeps a second process's reader, e.g. tests, safe).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/task.h"

namespace vmshadow::daemon {

enum class TaskState { queued, running, ok, failed, cancelled, interrupted };
std::string_view task_state_name(TaskState state);
std::optional<TaskState> parse_task_state(std::string_view name);
inline bool task_state_final(TaskState s) {
    return s != TaskState::queued && s != TaskState::running;
}

struct TaskRecord {
    std::int64_t id = 0;
    std::string kind;     // "backup", "verify", "prune", "check", "restore", "gc"
    std::string job;      // the job it runs; "" for an API request
    std::string target;   // what it works on: VM names, a repository name
    std::string trigger;  // "schedule", "catch-up", "api", "after:JOB"
    TaskState state = TaskState::queued;
    std::int64_t queued_at = 0;   // unix seconds (the store's clock)
    std::int64_t started_at = 0;  // 0: not started
    std::int64_t ended_at = 0;    // 0: not ended
    std::string result;           // JSON text of the operation's report ("" until it ends)
    std::string error;            // one line, when failed / cancelled / interrupted
    std::string error_kind;       // kind_name(): "not_found", ...
    Progress progress;            // the latest reported
    std::int64_t log_lines = 0;
};

struct LogLine {
    std::int64_t number = 0;  // 1, 2, ... within the task
    std::int64_t time = 0;    // unix seconds
    LogLevel level = LogLevel::info;
    std::string text;
};

struct TaskFilter {
    std::optional<TaskState> state;
    std::string job;                        // "": any
    std::string kind;                       // "": any
    std::optional<std::int64_t> before_id;  // paging: ids below this
    std::size_t limit = 100;                // newest first
};

struct JobScheduleState {
    std::optional<std::int64_t> last_slot;     // unix s of the last schedule slot handled
    std::optional<std::int64_t> last_success;  // unix s a run of the job last ended ok
    std::optional<std::int64_t> last_task;     // id of its newest task
};

struct VmBackupState {
    std::string vm;
    std::int64_t last_success = 0;  // unix s
    double last_duration_s = 0;
    std::uint64_t last_bytes_added = 0;
    std::int64_t last_freeze_ms = -1;  // -1: no freeze (crash, offline)
    std::string last_point;
    std::string last_consistency;
    std::uint64_t failures_total = 0;
    std::int64_t last_failure = 0;
};

class TaskStore {
  public:
    // Opens or creates the database (its folder must exist), schema version checked.
    static Result<std::unique_ptr<TaskStore>> open(const std::filesystem::path& file,
                                                   const Clock& clock);
    ~TaskStore();

    Result<std::int64_t> create(std::string_view kind, std::string_view job,
                                std::string_view target, std::string_view trigger);
    Status mark_running(std::int64_t id);
    // Ends a task: state ok / failed / cancelled / interrupted, its result JSON and error.
    Status finish(std::int64_t id, TaskState state, std::string_view result_json,
                  const std::optional<Error>& error);
    // Kept in memory, written to the database at most once a second per task and at finish.
    void set_progress(std::int64_t id, const Progress& progress);
    // The line's number; 0 when the log is full (100000 lines and the one saying so) and the
    // line was dropped.
    Result<std::int64_t> append_log(std::int64_t id, LogLevel level, std::string_view text);

    Result<std::optional<TaskRecord>> get(std::int64_t id) const;
    Result<std::vector<TaskRecord>> list(const TaskFilter& filter) const;
    // Lines numbered >= start, at most limit.
    Result<std::vector<LogLine>> log(std::int64_t id, std::int64_t start, std::size_t limit) const;

    // Start-up: queued or running tasks left by a previous process become interrupted
    // ("the daemon stopped while this task ran", error kind "unavailable"); returns them.
    Result<std::vector<TaskRecord>> mark_interrupted();
    // Deletes ended tasks (and their logs) beyond the newest keep_count, and those that
    // ended before now - keep_age.
    Status prune_history(std::size_t keep_count, std::chrono::seconds keep_age);

    Result<JobScheduleState> job_state(std::string_view job) const;
    Status set_job_slot(std::string_view job, std::int64_t slot);
    Status set_job_success(std::string_view job, std::int64_t when);
    Status set_job_last_task(std::string_view job, std::int64_t task);

    Result<std::vector<VmBackupState>> vm_states() const;
    Status record_vm_success(const VmBackupState& state);
    Status record_vm_failure(std::string_view vm, std::int64_t when);

    struct Impl;

  private:
    explicit TaskStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::daemon
