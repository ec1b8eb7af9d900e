// SPDX-License-Identifier: MIT
#pragma once
// Scheduler and RunQueue: when a job runs, and when a queued task may start.
//
// Scheduler (a pure function of the jobs, each job's last handled slot and the clock's now):
// a job's slots are the elapses of its CalendarEvent. Every slot in (last_slot, now] is due.
// One due slot that is recent (within `late_tolerance` of now) is an ordinary run. Anything
// else is a catch-up after downtime or a clock jump, governed by the job's `catch-up`:
// `one` (default) — a single run for all the missed slots, never two; `all` — one run per
// missed slot (at most `max_catch_up_runs`); `none` — none. Either way the job's last slot
// becomes the newest slot ≤ now, so a slot is handled once. A job never seen before (no
// last slot) starts counting from now: a new daily job does not run at once. A clock that
// jumps back does not repeat slots (they are ≤ last_slot).
//
// RunQueue: tasks wait here, in order, until they may start. A task names what it holds:
// VMs (exclusively: a backup, a restore, a verify of a VM), and a repository — shared
// (backup, verify, restore, check) or exclusive (prune + gc). A task starts when nothing it
// needs is held by a running task, the global limits allow it (concurrent backups, concurrent
// tasks), and no earlier waiting task needs the same VM or repository (no overtaking on a
// shared resource; tasks on other VMs do overtake). A job has at most one waiting task:
// pushing another for the same job is refused (coalesced).
//
// Thread-safety: Scheduler is a pure value; RunQueue is not synchronized (the daemon's loop
// owns it under its lock).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "daemon/job_config.h"

namespace vmshadow::daemon {

struct DueRun {
    std::string job;
    Clock::time_point slot;
    bool catch_up = false;
};

struct ScheduleDecision {
    std::vector<DueRun> runs;
    // Per job with a schedule: the new last handled slot (unix s) to persist.
    std::map<std::string, std::int64_t> last_slots;
    // The earliest elapse after now over all scheduled jobs (when to look again).
    std::optional<Clock::time_point> next_wake;
};

struct SchedulerOptions {
    std::chrono::seconds late_tolerance{60};
    unsigned max_catch_up_runs = 24;
};

// `last_slots`: each job's last handled slot (unix s), absent for a job never seen.
ScheduleDecision decide_runs(const std::vector<JobSpec>& jobs,
                             const std::map<std::string, std::int64_t>& last_slots,
                             Clock::time_point now, const SchedulerOptions& options = {});

// The next elapse of a job's schedule after `now` (nullopt: no schedule, disabled, or none).
std::optional<Clock::time_point> next_run(const JobSpec& job, Clock::time_point now);

struct QueuedTask {
    std::int64_t id = 0;
    std::string job;               // "" for an API request
    bool backup = false;           // counts against max_concurrent_backups
    std::vector<std::string> vms;  // held exclusively
    std::string repository;        // "" when none
    bool repository_exclusive = false;
};

class RunQueue {
  public:
    RunQueue(unsigned max_backups, unsigned max_tasks)
        : max_backups_(max_backups), max_tasks_(max_tasks) {}
    void set_limits(unsigned max_backups, unsigned max_tasks);

    // False (and nothing queued) when a task of the same job is already waiting.
    bool push(QueuedTask task);
    // Tasks that may start now, in queue order; they move to running.
    std::vector<QueuedTask> start_ready();
    // A running task ended: its VMs and repository are free.
    void finished(std::int64_t id);
    // Removes a waiting task (abort before start); false when it is not waiting.
    bool remove_waiting(std::int64_t id);

    bool waiting_for_job(const std::string& job) const;
    bool running_job(const std::string& job) const;
    std::size_t waiting() const { return waiting_.size(); }
    std::size_t running() const { return running_.size(); }

  private:
    bool conflicts(const QueuedTask& a, const QueuedTask& b) const;

    unsigned max_backups_;
    unsigned max_tasks_;
    std::vector<QueuedTask> waiting_;
    std::vector<QueuedTask> running_;
};

}  // namespace vmshadow::daemon
