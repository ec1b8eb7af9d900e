// SPDX-License-Identifier: MIT
#include "daemon/scheduler.h"

#include <algorithm>

#include "daemon/calendar.h"

namespace vmshadow::daemon {
namespace {

Clock::time_point from_unix(std::int64_t s) {
    return Clock::time_point(std::chrono::seconds(s));
}

std::optional<CalendarEvent> schedule_of(const JobSpec& job) {
    if (!job.enabled || job.schedule.empty()) return std::nullopt;
    auto event = CalendarEvent::parse(job.schedule);
    if (!event) return std::nullopt;  // validated when the config was loaded
    return *event;
}

}  // namespace

std::optional<Clock::time_point> next_run(const JobSpec& job, Clock::time_point now) {
    auto event = schedule_of(job);
    if (!event) return std::nullopt;
    return event->next_after(now);
}

ScheduleDecision decide_runs(const std::vector<JobSpec>& jobs,
                             const std::map<std::string, std::int64_t>& last_slots,
                             Clock::time_point now, const SchedulerOptions& options) {
    ScheduleDecision decision;
    for (const auto& job : jobs) {
        auto event = schedule_of(job);
        if (!event) continue;
        if (auto next = event->next_after(now)) {
            if (!decision.next_wake || *next < *decision.next_wake) decision.next_wake = next;
        }
        auto last = last_slots.find(job.id);
        if (last == last_slots.end()) {
            // Never seen: count from now, so a new job waits for its first slot.
            decision.last_slots[job.id] = unix_seconds(now);
            continue;
        }
        // The slots in (last, now]: walk them, keeping only what the policy needs. Bounded:
        // a schedule every second over years of downtime must not spin, so past the number
        // of runs we could start, only the newest slot matters (found by stepping on).
        std::vector<Clock::time_point> due;
        Clock::time_point cursor = from_unix(last->second);
        std::optional<Clock::time_point> newest;
        std::size_t count = 0;
        for (;;) {
            auto slot = event->next_after(cursor);
            if (!slot || *slot > now) break;
            newest = slot;
            ++count;
            if (due.size() < options.max_catch_up_runs) due.push_back(*slot);
            cursor = *slot;
            if (count > 100000) {  // a pathological gap: jump to just before now
                cursor = std::max(cursor, now - std::chrono::seconds(1));
            }
        }
        if (!newest) continue;  // nothing due; the last slot stays
        decision.last_slots[job.id] = unix_seconds(*newest);
        bool on_time = count == 1 && now - *newest <= options.late_tolerance;
        if (on_time) {
            decision.runs.push_back({job.id, *newest, false});
            continue;
        }
        switch (job.catch_up) {
            case CatchUp::none:
                break;
            case CatchUp::one:
                decision.runs.push_back({job.id, *newest, true});
                break;
            case CatchUp::all:
                for (auto slot : due) decision.runs.push_back({job.id, slot, true});
                break;
        }
    }
    return decision;
}

void RunQueue::set_limits(unsigned max_backups, unsigned max_tasks) {
    max_backups_ = std::max(1u, max_backups);
    max_tasks_ = std::max(1u, max_tasks);
}

bool RunQueue::push(QueuedTask task) {
    if (!task.job.empty() && waiting_for_job(task.job)) return false;
    waiting_.push_back(std::move(task));
    return true;
}

bool RunQueue::conflicts(const QueuedTask& a, const QueuedTask& b) const {
    for (const auto& vm : a.vms) {
        if (std::find(b.vms.begin(), b.vms.end(), vm) != b.vms.end()) return true;
    }
    if (!a.repository.empty() && a.repository == b.repository &&
        (a.repository_exclusive || b.repository_exclusive)) {
        return true;
    }
    return false;
}

std::vector<QueuedTask> RunQueue::start_ready() {
    std::vector<QueuedTask> started;
    std::vector<QueuedTask> still_waiting;
    auto backups_running = [&] {
        return static_cast<unsigned>(std::count_if(running_.begin(), running_.end(),
                                                   [](const auto& t) { return t.backup; }));
    };
    for (auto& task : waiting_) {
        bool blocked =
            running_.size() >= max_tasks_ || (task.backup && backups_running() >= max_backups_);
        // Nothing it needs is held by a running task ...
        for (const auto& r : running_) blocked = blocked || conflicts(task, r);
        // ... or wanted by a task that waits ahead of it (no overtaking on one resource).
        for (const auto& w : still_waiting) blocked = blocked || conflicts(task, w);
        // A job never runs twice at once.
        if (!task.job.empty() && running_job(task.job)) blocked = true;
        if (blocked) {
            still_waiting.push_back(std::move(task));
        } else {
            running_.push_back(task);
            started.push_back(std::move(task));
        }
    }
    waiting_ = std::move(still_waiting);
    return started;
}

void RunQueue::finished(std::int64_t id) {
    std::erase_if(running_, [id](const auto& t) { return t.id == id; });
}

bool RunQueue::remove_waiting(std::int64_t id) {
    return std::erase_if(waiting_, [id](const auto& t) { return t.id == id; }) > 0;
}

bool RunQueue::waiting_for_job(const std::string& job) const {
    return std::any_of(waiting_.begin(), waiting_.end(),
                       [&](const auto& t) { return t.job == job; });
}

bool RunQueue::running_job(const std::string& job) const {
    return std::any_of(running_.begin(), running_.end(),
                       [&](const auto& t) { return t.job == job; });
}

}  // namespace vmshadow::daemon
