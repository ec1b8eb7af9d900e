// SPDX-License-Identifier: MIT
#pragma once
// How `vmshadow checkpoint` shows checkpoints: the tree as Hyper-V Manager draws it, with
// "Now" under the checkpoint the VM runs above, and the same as JSON. Pure functions of the
// record (engine/checkpoint_tree.h), unit-tested.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/checkpoint_tree.h"

namespace vmshadow::cli {

// Local time "2026-12-07 11:50" of Unix seconds.
std::string local_minute(std::int64_t unix_seconds);

// One line per checkpoint, children indented under their parent in creation order, and a
// "Now" line under `current` (at the top level when there is none):
//   web1
//   └─ before upgrade  (production, 2026-12-07 11:50, application)
//      ├─ Now
//      └─ tried it  (standard, 2026-12-07 11:55, running-state)
// A checkpoint whose delete stopped part-way ends its line with
// "  [delete unfinished: run `vmshadow checkpoint delete VM NAME` again; do not apply]".
std::string render_checkpoint_tree(const engine::CheckpointTree& tree);

// {"vm", "vm_uuid", "current", "now": {"parent", "disks"}, "checkpoints": [...] (each with
//  "delete_unfinished"),
//  "tracking_reset_at", "tracking_reset_reason"}; times as ISO 8601 UTC.
nlohmann::json checkpoint_tree_json(const engine::CheckpointTree& tree);
nlohmann::json checkpoint_json(const engine::Checkpoint& checkpoint);

}  // namespace vmshadow::cli
