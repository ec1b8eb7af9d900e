// SPDX-License-Identifier: MIT
#pragma once
// ApiBackend: what the REST API asks of the daemon. The routes (api_routes.h) parse requests,
// check roles and turn results into responses; the daemon (daemon.h) implements this
// interface; unit tests of the routes implement it with a fake.
//
// Every method returns JSON the route sends as is (200, or 202 for a started task) or an
// Error whose kind picks the HTTP status (api_routes.h). A started operation returns at once
// with {"task": ID}.
//
// Thread-safety: called from the API server's threads at once; implementations lock.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "daemon/task_store.h"
#include "daemon/token_store.h"

namespace vmshadow::daemon {

class ApiBackend {
  public:
    virtual ~ApiBackend() = default;

    // [{"name", "state", "method", "last_point", "last_backup", "age_s", "consistency",
    //   "next_run", "jobs": [...], "protection": "protected|stale|unprotected|failing"}]
    virtual Result<nlohmann::json> vms() = 0;
    // {"vm": ..., "points": [{"id", "time", "consistency", "method", "repository", ...}]}
    virtual Result<nlohmann::json> points(const std::string& vm) = 0;

    // {"digest": "...", "jobs": [job_to_json...]} with "next_run" and "last_task" added.
    virtual Result<nlohmann::json> jobs() = 0;
    // Job edits carry the digest the client read; a stale one is ErrorKind::conflict and
    // changes nothing. Each returns the new {"digest", "job"}.
    virtual Result<nlohmann::json> add_job(const nlohmann::json& job,
                                           const std::string& digest) = 0;
    virtual Result<nlohmann::json> edit_job(const std::string& id, const nlohmann::json& job,
                                            const std::string& digest) = 0;
    virtual Result<nlohmann::json> remove_job(const std::string& id, const std::string& digest) = 0;
    // Queues a run now; {"task": ID}.
    virtual Result<nlohmann::json> run_job(const std::string& id) = 0;

    virtual Result<nlohmann::json> tasks(const TaskFilter& filter) = 0;
    virtual Result<nlohmann::json> task(std::int64_t id) = 0;
    // {"task": ID, "start": N, "lines": [{"n", "time", "level", "text"}], "next": N, "done": bool}
    virtual Result<nlohmann::json> task_log(std::int64_t id, std::int64_t start,
                                            std::size_t limit) = 0;
    // Requests cancellation (a queued task ends cancelled at once); conflict when it ended.
    virtual Result<nlohmann::json> abort_task(std::int64_t id) = 0;

    // {"repositories": [{"name", "path"}]}: the config's repositories, by name.
    virtual Result<nlohmann::json> repositories() = 0;
    // {"name", "path", "size", "stored_size", "deduplicated_size", "chunks", "points",
    //  "dedup_ratio", "last_check", "last_gc"}
    virtual Result<nlohmann::json> repository_status(const std::string& name) = 0;

    // {"point" (an id, a prefix, "VM@latest") or "vm" (its latest point), "repository"
    //  (default: the only one configured), "as" (optional), "replace": bool, "start": bool}
    //  → {"task": ID}
    virtual Result<nlohmann::json> restore(const nlohmann::json& request) = 0;
    // {"point" or "vm", "repository", "boot": bool (only true)} → {"task": ID}
    virtual Result<nlohmann::json> verify(const nlohmann::json& request) = 0;

    // One-off backup of one VM (the dashboard's "back up now"): {"vm", "method":
    // "auto|application|image|crash" (default auto), "repository" (default: the only one)}
    // → {"task": ID}. Held in the run queue and recorded (VM state, metrics) as a job's backup.
    virtual Result<nlohmann::json> backup(const nlohmann::json& request) = 0;
    // Forgets one restore point (an id, a unique prefix or "VM@latest") of `repository` ("":
    // the only one) under the repository's exclusive lock; locked when it is held.
    // → {"forgotten": ID, "repository": NAME}
    virtual Result<nlohmann::json> forget_point(const std::string& point,
                                                const std::string& repository) = 0;
    // What prune would decide, changing nothing: {"vm" (optional), "keep_last", "keep_hourly",
    // "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly" (optional ints >= 1, at
    // least one)} → {"points": [{"id", "vm", "time", "keep", "reasons"}]} — what
    // `vmshadow prune --dry-run --json` prints as "points".
    virtual Result<nlohmann::json> prune_preview(const std::string& repository,
                                                 const nlohmann::json& request) = 0;
    // The next `count` elapses of a calendar event after now:
    // {"expr", "normalized", "next": ["2026-12-07T22:00:00Z", ...]}; invalid_argument with the
    // parser's message when it is not valid.
    virtual Result<nlohmann::json> schedule_preview(const std::string& expr, int count) = 0;

    // Replica (docs/REPLICA.md). Both roles of this host in one list:
    // {"replicas": [{"vm", "uuid", "role": "primary|replica", "peer" ("host:port" or the
    //   primary's subject), "state": "initial|normal|warning|critical|paused|resync-required|
    //   failed-over|test-failover", "reason", "interval_s", "history", "app_consistent_every_h",
    //   "last_cycle" (ISO time|null), "next_cycle" (ISO|null), "rpo_s" (number|null),
    //   "avg_cycle_s", "max_cycle_s", "bytes_sent", "missed_cycles", "cycles_last_hour",
    //   "points", "last_error"}]}
    virtual Result<nlohmann::json> replicas() = 0;
    // {"vm", "to", "interval_s" (30|300|900), "history" (0..24), "app_consistent_every_h"
    //  (0..24), "exclude_disks": [...], "bandwidth_mib" (0..100000), "start_at" (optional),
    //  "initial": "network|offline|repository", "seed_repository", "seed_point"}
    //  → the new replica's status entry (the initial copy starts on schedule, as a task)
    virtual Result<nlohmann::json> replica_enable(const nlohmann::json& request) = 0;
    // {"vm", "points": [{"seq", "token", "time", "consistency"}]} (replica role)
    virtual Result<nlohmann::json> replica_points(const std::string& vm) = 0;
    // Actions on one VM's replication. Quick ones answer {"ok": true, ...}; long ones start a
    // task and answer {"task": ID}. action (request fields):
    //   pause, resume, remove {"on_replica": bool}, cycle (a cycle now: task), resync (task),
    //   test-failover {"point" (seq, optional)} (task), stop-test, failover {"point"} (task),
    //   commit, planned-failover (task, primary), reverse (task, new primary),
    //   export-initial {"dir"} (task), import-initial {"dir"} (task; vm ignored)
    virtual Result<nlohmann::json> replica_action(const std::string& vm, const std::string& action,
                                                  const nlohmann::json& request) = 0;
    // {"status": "ok", "version", "uptime_s", "tasks_running", "tasks_queued"}
    virtual nlohmann::json health() = 0;
    // Prometheus text exposition (metrics.h).
    virtual std::string metrics() = 0;

    // Tokens (admin): {"tokens": [...]}; create → {"name", "role", "token"} (shown once).
    virtual Result<nlohmann::json> tokens() = 0;
    virtual Result<nlohmann::json> create_token(const std::string& name, Role role) = 0;
    virtual Result<nlohmann::json> revoke_token(const std::string& name) = 0;
};

}  // namespace vmshadow::daemon
