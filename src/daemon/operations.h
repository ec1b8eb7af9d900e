// SPDX-License-Identifier: MIT
#pragma once
// Operations: the engine's operations as a task of the daemon runs them — a job's run
// (backup with its retention, verify, prune + gc, check) or an API request (restore,
// verify) — with the task's context (progress, log, cancel, clock), returning a result fit
// for the task record.
//
// This module is: resolving a job's VM patterns against the host's VMs, opening the job's
// repository with its password file, calling the engine (engine::backup_vms, restore_vm,
// verify_boot; repo::prune, check_repository), and turning the reports into JSON plus the
// per-VM facts the daemon keeps (last success, bytes added, freeze window).
// It is not: queueing, scheduling or the task record (daemon.h, scheduler.h, task_store.h).
// No header of the daemon names an engine or repository type: the engine stays behind this
// file.
//
// Thread-safety: each call opens its own libvirt connection and repository; calls run on
// several threads at once.

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "daemon/job_config.h"
#include "daemon/task_store.h"

namespace vmshadow::daemon {

struct OperationOutcome {
    nlohmann::json result = nlohmann::json::object();
    std::optional<Error> error;
    std::vector<VmBackupState> vm_successes;  // backup: each VM backed up
    std::vector<std::string> vm_failures;     // backup: each VM that failed
};

// The VMs of the host that `patterns` (names or fnmatch globs; "*" = all) match, sorted;
// not_found when a plain name (no glob characters) is absent, or nothing matches at all.
Result<std::vector<std::string>> resolve_vms(const std::vector<std::string>& patterns,
                                             const std::string& connect_uri);

// A job's run. `vms` is the resolved list for backup and verify jobs.
OperationOutcome run_job(const JobSpec& job, const std::vector<std::string>& vms,
                         const DaemonConfig& config, TaskContext& task);

// POST /restore and POST /verify bodies (checked by the API before they are queued).
struct RestoreRequest {
    std::string repository;
    std::string point;  // id, prefix or VM@latest
    std::optional<std::string> as_name;
    bool replace = false;
    bool start = false;
};
struct VerifyRequest {
    std::string repository;
    std::string point;
};
OperationOutcome run_restore(const RestoreRequest& request, const DaemonConfig& config,
                             TaskContext& task);
OperationOutcome run_verify(const VerifyRequest& request, const DaemonConfig& config,
                            TaskContext& task);

// What GET /vms shows of each VM of the host: its state and the backup method it would get
// now (the guest agent probed, in parallel, as `vmshadow vm list` does).
struct VmSummary {
    std::string name;
    std::string state;   // "running", "shut off", ...
    std::string method;  // application | image | crash | offline | none
    std::vector<std::string> reasons;
};
Result<std::vector<VmSummary>> host_inventory(const DaemonConfig& config);

// Repository facts for GET /repos/{name}/status and the metrics (shared lock, a moment).
struct RepositoryFacts {
    std::uint64_t stored_bytes = 0;
    std::uint64_t logical_bytes = 0;
    std::uint64_t packs = 0, blobs = 0, points = 0;
    bool encrypted = false;
    // Each VM's newest point, however it was made (the daemon, `vmshadow backup` by hand).
    struct LatestPoint {
        std::string id;
        std::int64_t time = 0;
        std::string consistency;
    };
    std::map<std::string, LatestPoint> latest;
};
Result<RepositoryFacts> repository_facts(const RepositorySpec& spec);
// Points of one VM (all VMs when empty), newest first, as `points --json` prints them, plus
// what the dashboard shows of each: "repository", "freeze_ms" (the guest's freeze window, null
// without one), "duration_s" (null when unknown) and "verified" ("ok" / "failed" from the
// point's last boot verification, null when never verified).
Result<nlohmann::json> repository_points(const RepositorySpec& spec, const std::string& vm);

// What prune would decide with `keep` for `vm` ("" = every VM), changing nothing (shared lock):
// [{"id", "vm", "time", "keep", "reasons"}] as `vmshadow prune --dry-run --json` prints
// "points". invalid_argument when `keep` has no rule.
Result<nlohmann::json> prune_preview(const RepositorySpec& spec, const std::string& vm,
                                     const Retention& keep);

// Forgets one point (an id, a unique prefix or "VM@latest") as `vmshadow forget` does, under
// the repository's exclusive lock (locked when another holds it); its data is freed by the
// next gc. Returns the point's full id.
Result<std::string> forget_point(const RepositorySpec& spec, const std::string& point);

}  // namespace vmshadow::daemon
