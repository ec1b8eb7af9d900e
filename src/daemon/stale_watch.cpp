// SPDX-License-Identifier: MIT
#include "daemon/stale_watch.h"

namespace vmshadow::daemon {

std::vector<Alert> stale_backup_alerts(const StaleWatchInput& in, std::set<std::string>& alerted) {
    std::vector<Alert> out;
    for (const auto& job : in.jobs) {
        if (job.kind != JobKind::backup || job.alert_after_hours == 0 || !job.enabled) continue;
        const std::int64_t limit = static_cast<std::int64_t>(job.alert_after_hours) * 3600;
        auto vms = in.vms_of_job.find(job.id);
        if (vms == in.vms_of_job.end()) continue;  // the job's own failure says why
        for (const auto& vm : vms->second) {
            if (alerted.count(vm)) continue;
            auto last = in.last_success.find(vm);
            const std::int64_t since = last != in.last_success.end() && last->second > 0
                                           ? last->second
                                           : in.watching_since;
            if (in.now - since < limit) continue;
            alerted.insert(vm);
            Alert alert;
            alert.event = "no_recent_backup";
            alert.time = in.now;
            alert.job = job.id;
            alert.vm = vm;
            alert.state = "stale";
            alert.message =
                "vm " + vm + " has had no successful backup for " +
                std::to_string((in.now - since) / 3600) + " h (job " + job.id + " allows " +
                std::to_string(job.alert_after_hours) + " h)" +
                (last == in.last_success.end() ? ", and none since vmshadowd started" : "");
            out.push_back(std::move(alert));
        }
    }
    return out;
}

}  // namespace vmshadow::daemon
