// SPDX-License-Identifier: MIT
#pragma once
// The JSON of a VM backup's outcome: what `vmshadow backup --json` prints for each VM and what
// vmshadowd keeps as a backup task's result, the same object in both.
//
// Thread-safety: a pure function.

#include <nlohmann/json.hpp>

#include "engine/vm_backup.h"

namespace vmshadow::engine {

// {"vm", "point", "method", "consistency", "reasons", "notes", "freeze_ms", "quiesce_ms",
//  "paused_ms", "bytes_read", "bytes_added", "incremental_from", "checkpoint",
//  "skipped_disks", "disks": [{"disk", "mode", "size", "bytes_read", "bytes_added", "note"}],
//  "seconds"} and, for a VM that failed, "error" and "kind".
nlohmann::json vm_backup_outcome_json(const VmBackupOutcome& outcome);

}  // namespace vmshadow::engine
