// SPDX-License-Identifier: MIT
#pragma once
// The stale-backup watch: which VMs have had no successful backup for longer than their
// backup job's `alert-after-hours` — the alert that fires even when the job never ran (a
// schedule that never fires, a daemon that was down), the silent failure of cron setups.
//
// A VM never backed up counts from when the daemon started watching. Each VM alerts once;
// its next successful backup (the daemon removes it from `alerted`) re-arms it.
//
// Thread-safety: a pure function of its arguments (`alerted` is the caller's).

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "daemon/alerts.h"
#include "daemon/job_config.h"

namespace vmshadow::daemon {

struct StaleWatchInput {
    const std::vector<JobSpec>& jobs;
    // Each watched backup job's VMs as the host has them now (by job id).
    const std::map<std::string, std::vector<std::string>>& vms_of_job;
    // Each VM's last successful backup (unix s); absent: never.
    const std::map<std::string, std::int64_t>& last_success;
    std::int64_t now = 0;
    std::int64_t watching_since = 0;
};

// The alerts due now; the VMs they name are added to `alerted`.
std::vector<Alert> stale_backup_alerts(const StaleWatchInput& input,
                                       std::set<std::string>& alerted);

}  // namespace vmshadow::daemon
