// SPDX-License-Identifier: MIT
#include "engine/vm_backup_json.h"

namespace vmshadow::engine {

nlohmann::json vm_backup_outcome_json(const VmBackupOutcome& o) {
    using nlohmann::json;
    auto opt = [](const auto& v) { return v ? json(*v) : json(); };
    json disks = json::array();
    for (const auto& d : o.disks) {
        disks.push_back({{"disk", d.target},
                         {"mode", d.mode},
                         {"size", d.size},
                         {"bytes_read", d.bytes_read},
                         {"bytes_added", d.bytes_added},
                         {"note", d.note}});
    }
    json out{{"vm", o.vm},
             {"point", opt(o.point)},
             {"method", o.method},
             {"consistency", o.consistency},
             {"reasons", o.reasons},
             {"notes", o.notes},
             {"freeze_ms", opt(o.freeze_ms)},
             {"quiesce_ms", opt(o.quiesce_ms)},
             {"paused_ms", opt(o.paused_ms)},
             {"bytes_read", o.bytes_read},
             {"bytes_added", o.bytes_added},
             {"incremental_from", opt(o.incremental_from)},
             {"checkpoint", opt(o.checkpoint)},
             {"skipped_disks", o.skipped},
             {"disks", disks},
             {"seconds", o.seconds}};
    if (o.error) {
        out["error"] = o.error->message();
        out["kind"] = kind_name(o.error->kind());
    }
    return out;
}

}  // namespace vmshadow::engine
