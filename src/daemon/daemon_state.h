// SPDX-License-Identifier: MIT
#pragma once
// Daemon::State: what the daemon holds, shared by its lifecycle and loop (daemon.cpp), its
// tasks (daemon_tasks.cpp) and its API answers (daemon_api.cpp). Private to the daemon.

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "daemon/alerts.h"
#include "daemon/api_routes.h"
#include "daemon/daemon.h"
#include "daemon/job_config.h"
#include "daemon/operations.h"
#include "daemon/scheduler.h"
#include "daemon/session_store.h"
#include "daemon/static_files.h"
#include "daemon/task_store.h"
#include "daemon/token_store.h"
#include "net/http_server.h"
#include "replica/replica_host.h"
#include "replica/replica_primary.h"

namespace vmshadow::daemon {

// What a waiting task will run. A one-off backup (POST /backup) has a `job` without an id:
// it runs and is recorded as a job's backup, but no job's state, chain or alert follows it.
struct TaskPlan {
    std::int64_t id = 0;
    std::string kind;
    std::optional<JobSpec> job;
    std::vector<std::string> vms;
    std::optional<RestoreRequest> restore;
    std::optional<VerifyRequest> verify;
    // A replica operation (daemon_replica.cpp): what the task runs. `internal`: a routine
    // replica cycle, held in the RunQueue like a task but not recorded in the task store (a
    // cycle every 30 s would bury the task list); its id is negative.
    std::function<OperationOutcome(TaskContext&)> action;
    bool internal = false;
};

struct RunningTask {
    CancelToken cancel;
    std::thread thread;
    bool done = false;
};

// The vmshadow_replica_* metric families from the API's replicas JSON (daemon_replica.cpp).
std::string replica_metrics_text(const nlohmann::json& replicas);

struct Daemon::State {
    DaemonOptions options;
    const Clock* clock = nullptr;
    std::chrono::system_clock::time_point started;
    std::string fingerprint;
    std::filesystem::path socket_path;

    std::mutex mutex;  // everything below until the next comment
    std::condition_variable wake;
    LoadedConfig config;
    RunQueue queue{1, 4};
    std::map<std::int64_t, TaskPlan> waiting;
    std::map<std::int64_t, std::unique_ptr<RunningTask>> running;
    std::map<std::string, std::int64_t> last_slots;
    std::set<std::string> stale_alerted;  // VMs whose "no recent backup" alert fired
    std::map<std::pair<std::string, std::string>, std::uint64_t> finished;
    std::chrono::steady_clock::time_point next_housekeeping{};
    // Repository sizes for the metrics: refreshed by the loop (outside the lock) every few
    // minutes and after a task that changed a repository.
    std::map<std::string, RepositoryFacts> repository_facts;
    std::chrono::steady_clock::time_point next_facts{};
    bool stopping = false;

    std::mutex inventory_mutex;  // the inventory cache
    std::vector<VmSummary> inventory;
    std::chrono::steady_clock::time_point inventory_time{};
    std::atomic<bool> inventory_refreshing{false};

    std::unique_ptr<TaskStore> store;
    std::unique_ptr<TokenStore> tokens;
    std::unique_ptr<SessionStore> sessions;
    std::unique_ptr<StaticFiles> web;
    std::unique_ptr<AlertTransport> alert_transport;
    std::unique_ptr<AlertSender> alerts;
    std::unique_ptr<ApiRoutes> routes;
    std::unique_ptr<net::HttpServer> server;
    std::thread loop;

    // Replica ([replica] in the config; daemon_replica.cpp). Created at start or by the first
    // reload that adds the section; the listener's address is fixed until a restart.
    std::unique_ptr<replica::ReplicaPrimary> replica_primary;
    std::unique_ptr<replica::ReplicaHost> replica_host;
    std::unique_ptr<net::HttpServer> replica_server;  // under `mutex` only when replaced
    std::string replica_listen;                       // what replica_server listens on
    std::string replica_bound;                        // "address:port" it got
    std::atomic<replica::ReplicaHost*> replica_host_ready{nullptr};  // for the listener
    // Cycles queued (waiting or running) by VM name, and since when the waiting ones wait:
    // a cycle that cannot start within its interval counts as missed (ReplicaPrimary).
    std::map<std::string, std::int64_t> replica_cycles;  // vm → plan id
    std::map<std::string, Clock::time_point> replica_waiting_since;
    std::int64_t next_internal_id = -1;

    void log(LogLevel level, std::string_view line) const {
        if (options.log) options.log(level, line);
    }

    // Runs decided with the lock held (schedules, `after` chains) wait here until the loop
    // has looked their VMs up without it.
    std::vector<std::pair<JobSpec, std::string>> pending_runs;

    // A job's VMs as the host has them now (libvirt: milliseconds, seconds when it is busy):
    // looked up WITHOUT the lock, so the API never waits for libvirt.
    static std::optional<Result<std::vector<std::string>>> lookup_vms(const JobSpec& job,
                                                                      const std::string& uri);

    // daemon_tasks.cpp; all called with `mutex` held. `vms`: lookup_vms' answer.
    Result<std::int64_t> queue_job(const JobSpec& job, const std::string& trigger,
                                   const std::optional<Result<std::vector<std::string>>>& vms);
    Result<std::int64_t> queue_request(TaskPlan plan, const std::string& target);
    void start_ready_tasks();
    void reap_finished_tasks();
    void task_ended(const TaskPlan& plan, TaskState state, const std::optional<Error>& error);
    // `vms_of_job`: each alerting backup job's VMs, looked up without the lock.
    void check_stale_backups(const std::map<std::string, std::vector<std::string>>& vms_of_job);
    // With `lock` held on entry and exit; releases it while repositories are read.
    void refresh_repository_facts(std::unique_lock<std::mutex>& lock);
    // Without the lock: runs a task to its end on its own thread.
    void run_task(TaskPlan plan, CancelToken cancel);

    // daemon_replica.cpp. Without the lock: makes or updates the replica objects and the
    // listener for `config` (start, reload).
    Status configure_replica(const DaemonConfig& config);
    Status start_replica_listener(const ReplicaSettings& settings, const std::string& subject);
    // With `mutex` held: queues due replica cycles when their VM is free, counts missed ones.
    void queue_replica_cycles();
    // With `mutex` held: queues a replica task (kind "replica-...") holding `vm`.
    Result<std::int64_t> queue_replica_task(const std::string& kind, const std::string& vm,
                                            std::function<OperationOutcome(TaskContext&)> action,
                                            bool hold_vm = true);
};

}  // namespace vmshadow::daemon
