// SPDX-License-Identifier: MIT
#pragma once
// Checkpoints and change tracking: whether the dirty bitmaps an incremental backup or a
// replica cycle starts from still describe a VM's disks after its checkpoint operations
// (docs/CHECKPOINTS.md, "Checkpoints and backups").
//
// Live checkpoint create (libvirt external snapshot) and live delete (libvirt block commit)
// carry the bitmaps along: the chain continues, though the disk's file changes. Apply, and
// any change of the chain made with qemu-img while the VM was off (an offline create's
// overlay has no bitmap recording the writes made on it; an offline merge drops bitmaps),
// break it — each records that in the tree (tracking_reset_at/_reason) — and the next read
// from a change-tracked base before it must be full, and say why.
// This module is pure (unit-tested); the backup (vm_backup.cpp) and the replica read
// (vm_changes.cpp) load the record and ask it.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/checkpoint_tree.h"

namespace vmshadow::engine {

// Why the tracking since `since` (Unix seconds of the base the incremental would start from:
// the last restore point, the last replica checkpoint) no longer holds; nullopt when it does.
// A moment in the same second counts as after (a needless full, never a wrong incremental).
std::optional<std::string> checkpoint_tracking_broken(const CheckpointTree& tree,
                                                      std::int64_t since);

// The disks' previous paths (target, path), with the path of each disk the checkpoint
// operations moved (the record's active image is the disk's file now) replaced by the current
// one, so the "disk replaced since the last backup" check does not take a checkpoint for a
// swapped disk. `current`: (target, path) of the VM's disks now. Only for a tracking that
// holds.
std::vector<std::pair<std::string, std::string>> paths_across_checkpoints(
    const CheckpointTree& tree, std::vector<std::pair<std::string, std::string>> previous,
    const std::vector<std::pair<std::string, std::string>>& current);

}  // namespace vmshadow::engine
