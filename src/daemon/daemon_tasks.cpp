// SPDX-License-Identifier: MIT
// Daemon::State's tasks: queueing a job's run or an API request, starting what the RunQueue
// lets start, running the engine's operation on the task's own thread with its progress and
// log going to the TaskStore, and what follows a task's end (per-VM state, `after` chains,
// alerts).
#include "daemon/daemon_state.h"
#include "daemon/stale_watch.h"

namespace vmshadow::daemon {
namespace {

// The task's progress and log, into the store. The store throttles progress writes.
class StoreSinks final : public ProgressSink, public LogSink {
  public:
    StoreSinks(TaskStore& store, std::int64_t id) : store_(store), id_(id) {}
    void update(const Progress& progress) override { store_.set_progress(id_, progress); }
    void write(LogLevel level, std::string_view line) override {
        (void)store_.append_log(id_, level, line);
    }

  private:
    TaskStore& store_;
    std::int64_t id_;
};

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& i : items) out += (out.empty() ? "" : ",") + i;
    return out;
}

QueuedTask queued(const TaskPlan& plan) {
    QueuedTask q;
    q.id = plan.id;
    q.job = plan.job ? plan.job->id : "";
    q.backup = plan.kind == "backup";
    if (plan.kind == "backup" || plan.kind == "restore" || plan.kind.starts_with("replica"))
        q.vms = plan.vms;
    if (plan.job) q.repository = plan.job->repository;
    if (plan.restore) q.repository = plan.restore->repository;
    if (plan.verify) q.repository = plan.verify->repository;
    q.repository_exclusive = plan.kind == "prune";
    return q;
}

TaskState state_for(const std::optional<Error>& error) {
    if (!error) return TaskState::ok;
    return error->kind() == ErrorKind::cancelled ? TaskState::cancelled : TaskState::failed;
}

}  // namespace

std::optional<Result<std::vector<std::string>>> Daemon::State::lookup_vms(const JobSpec& job,
                                                                          const std::string& uri) {
    if (job.kind != JobKind::backup && job.kind != JobKind::verify) return std::nullopt;
    return resolve_vms(job.vms, uri);
}

Result<std::int64_t> Daemon::State::queue_job(
    const JobSpec& job, const std::string& trigger,
    const std::optional<Result<std::vector<std::string>>>& vms) {
    if (queue.waiting_for_job(job.id)) {
        // One waiting run per job: a slot that comes while one waits joins it.
        for (const auto& [id, plan] : waiting) {
            if (plan.job && plan.job->id == job.id) return id;
        }
    }
    TaskPlan plan;
    plan.kind = std::string(job_kind_name(job.kind));
    plan.job = job;
    std::optional<Error> resolve_error;
    if (vms && *vms) plan.vms = **vms;
    if (vms && !*vms) resolve_error = vms->error();
    std::string target = plan.vms.empty() ? job.repository : join(plan.vms);
    auto id = store->create(plan.kind, job.id, target, trigger);
    if (!id) return id;
    plan.id = *id;
    (void)store->set_job_last_task(job.id, *id);
    if (resolve_error) {
        // Nothing to hold or run: the task ends at once, and says why.
        (void)store->append_log(*id, LogLevel::error, resolve_error->message());
        (void)store->finish(*id, TaskState::failed, "{}", resolve_error);
        task_ended(plan, TaskState::failed, resolve_error);
        return id;
    }
    (void)store->append_log(*id, LogLevel::info, "queued (" + trigger + ")");
    queue.push(queued(plan));
    waiting.emplace(*id, std::move(plan));
    wake.notify_all();
    return id;
}

Result<std::int64_t> Daemon::State::queue_request(TaskPlan plan, const std::string& target) {
    auto id = store->create(plan.kind, "", target, "api");
    if (!id) return id;
    plan.id = *id;
    (void)store->append_log(*id, LogLevel::info, "queued (api)");
    queue.push(queued(plan));
    waiting.emplace(*id, std::move(plan));
    wake.notify_all();
    return id;
}

void Daemon::State::start_ready_tasks() {
    if (stopping) return;
    for (const auto& q : queue.start_ready()) {
        auto it = waiting.find(q.id);
        if (it == waiting.end()) {
            queue.finished(q.id);
            continue;
        }
        TaskPlan plan = std::move(it->second);
        waiting.erase(it);
        auto task = std::make_unique<RunningTask>();
        CancelToken cancel = task->cancel;
        if (!plan.internal) (void)store->mark_running(plan.id);
        if (plan.kind.starts_with("replica"))
            for (const auto& vm : plan.vms) replica_waiting_since.erase(vm);
        task->thread = std::thread([this, plan = std::move(plan), cancel]() mutable {
            run_task(std::move(plan), cancel);
        });
        running.emplace(q.id, std::move(task));
    }
}

void Daemon::State::reap_finished_tasks() {
    for (auto it = running.begin(); it != running.end();) {
        if (it->second->done) {
            if (it->second->thread.joinable()) it->second->thread.join();
            it = running.erase(it);
        } else {
            ++it;
        }
    }
}

void Daemon::State::run_task(TaskPlan plan, CancelToken cancel) {
    if (plan.internal) {
        // A routine replica cycle: its outcome lives in the replica link (health, last
        // error), not in the task store.
        TaskContext context({}, {}, cancel, *clock);
        (void)plan.action(context);
        std::lock_guard lock(mutex);
        queue.finished(plan.id);
        if (auto it = running.find(plan.id); it != running.end()) it->second->done = true;
        for (const auto& vm : plan.vms) replica_cycles.erase(vm);
        wake.notify_all();
        return;
    }
    StoreSinks sinks(*store, plan.id);
    TaskContext context(&sinks, &sinks, cancel, *clock);
    DaemonConfig config_now;
    {
        std::lock_guard lock(mutex);
        config_now = config.config;
    }
    context.info("started: " + plan.kind + (plan.vms.empty() ? "" : " of " + join(plan.vms)));
    OperationOutcome outcome;
    if (plan.job) {
        outcome = daemon::run_job(*plan.job, plan.vms, config_now, context);
    } else if (plan.restore) {
        outcome = run_restore(*plan.restore, config_now, context);
    } else if (plan.verify) {
        outcome = run_verify(*plan.verify, config_now, context);
    } else if (plan.action) {
        outcome = plan.action(context);
    }
    TaskState state = state_for(outcome.error);
    for (const auto& vm : outcome.vm_successes) (void)store->record_vm_success(vm);
    for (const auto& vm : outcome.vm_failures) {
        (void)store->record_vm_failure(vm, unix_seconds(clock->now()));
    }
    if (outcome.error) {
        context.log(state == TaskState::cancelled ? LogLevel::warning : LogLevel::error,
                    outcome.error->message());
    }
    context.info(std::string("ended: ") + std::string(task_state_name(state)));
    (void)store->finish(plan.id, state, outcome.result.dump(), outcome.error);
    if (plan.job && !plan.job->id.empty() && state == TaskState::ok) {
        (void)store->set_job_success(plan.job->id, unix_seconds(clock->now()));
    }
    std::lock_guard lock(mutex);
    queue.finished(plan.id);
    if (auto it = running.find(plan.id); it != running.end()) it->second->done = true;
    task_ended(plan, state, outcome.error);
    wake.notify_all();
}

void Daemon::State::task_ended(const TaskPlan& plan, TaskState state,
                               const std::optional<Error>& error) {
    ++finished[{plan.kind, std::string(task_state_name(state))}];
    if (plan.kind.starts_with("replica")) {
        // The VM's next cycle may be queued again (ended, or aborted while it waited).
        for (const auto& vm : plan.vms) {
            auto it = replica_cycles.find(vm);
            if (it != replica_cycles.end() && it->second == plan.id) {
                replica_cycles.erase(it);
                replica_waiting_since.erase(vm);
            }
        }
    }
    if (plan.kind == "backup" || plan.kind == "prune") {
        // Sizes changed: refresh within 10 s, not after every task (opening an encrypted
        // repository derives its key: a second of CPU).
        auto soon = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        if (next_facts > soon) next_facts = soon;
    }
    if (!plan.job) return;
    const JobSpec& job = *plan.job;
    for (const auto& vm : plan.vms) {
        if (state == TaskState::ok) stale_alerted.erase(vm);
    }
    if (job.id.empty()) return;  // a one-off backup: no job to chain or alert for
    if (state == TaskState::ok && !stopping) {
        for (const auto& next : config.config.jobs) {
            if (next.after && *next.after == job.id && next.enabled) {
                pending_runs.emplace_back(next, "after:" + job.id);
            }
        }
    }
    bool failed = state == TaskState::failed || state == TaskState::interrupted;
    if (alerts && (job.notify == Notify::always || (job.notify == Notify::failure && failed))) {
        Alert alert;
        alert.event = failed ? "task_failed" : "task_ended";
        alert.time = unix_seconds(clock->now());
        alert.job = job.id;
        alert.vm = join(plan.vms);
        alert.task = plan.id;
        alert.state = std::string(task_state_name(state));
        alert.message = "job " + job.id + " (task " + std::to_string(plan.id) + ") " + alert.state +
                        (error ? ": " + error->message() : "");
        alerts->send(std::move(alert));
    }
}

void Daemon::State::refresh_repository_facts(std::unique_lock<std::mutex>& lock) {
    auto repositories = config.config.repositories;
    lock.unlock();
    std::map<std::string, RepositoryFacts> fresh;
    for (const auto& [name, spec] : repositories) {
        auto facts = daemon::repository_facts(spec);  // the function, not the member map
        if (facts) fresh[name] = *facts;
        // A repository busy with gc (exclusive lock) keeps its last figures.
    }
    lock.lock();
    for (auto& [name, facts] : fresh) repository_facts[name] = facts;
}

void Daemon::State::check_stale_backups(
    const std::map<std::string, std::vector<std::string>>& vms_of_job) {
    if (!alerts) return;
    auto states = store->vm_states();
    if (!states) return;
    std::map<std::string, std::int64_t> last_success;
    for (const auto& s : *states) last_success[s.vm] = s.last_success;
    // A point made by hand counts as a backup too (the repositories' newest points).
    for (const auto& [repository, facts] : repository_facts) {
        for (const auto& [vm, latest] : facts.latest) {
            last_success[vm] = std::max(last_success[vm], latest.time);
        }
    }
    StaleWatchInput input{config.config.jobs, vms_of_job, last_success, unix_seconds(clock->now()),
                          unix_seconds(started)};
    for (auto& alert : stale_backup_alerts(input, stale_alerted)) {
        log(LogLevel::warning, alert.message);
        alerts->send(std::move(alert));
    }
}

}  // namespace vmshadow::daemon
