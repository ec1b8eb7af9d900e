// SPDX-License-Identifier: MIT
#pragma once
// Checkpoint merge plan: which image operations delete one checkpoint — engine-internal, for
// checkpoint_delete.cpp (pure; unit-tested).
//
// For each disk, the images that depend on the checkpoint's layer L (its children's layers,
// and the "now" overlay when the checkpoint is current) must stop needing it, and no
// checkpoint's content may change:
//   - one of them, `keep`, is committed into L; L's file then holds keep's content and keep's
//     owner (a checkpoint or "now") is recorded with L's file, keep's own file is dropped.
//     keep is the dependant the running VM has open when there is one (a libvirt block
//     commit: active + pivot for the running overlay, intermediate otherwise — the only way to
//     merge an image QEMU holds, and the one that carries the dirty bitmaps along); else any
//     other dependant but "now" of a shut-off VM (its domain XML names that file), by qemu-img;
//   - every other dependant pulls L's data (qemu-img rebase onto L's backing): none of them
//     is open (a chain is linear: at most one dependant is in the running chain);
//   - none left (a leaf that is not current): L's file is simply deleted.
// A dependant whose image is already L's file was merged by an earlier attempt that failed
// later (the record is saved after every commit): a retry of that disk only pulls the others.
//
// It is not: running them (checkpoint_delete.cpp) nor libvirt.

#include <set>
#include <string>
#include <vector>

#include "engine/checkpoint_tree.h"

namespace vmshadow::engine {

inline constexpr const char* kNowOwner = "";  // the owner id of the "now" overlay

enum class LayerMerge {
    commit_active,        // libvirt: the running overlay into L, then pivot
    commit_intermediate,  // libvirt: an image of the running chain into L
    commit_offline,       // qemu-img commit, then keep's dependants re-pointed at L
};

struct DiskMergePlan {
    std::string target;
    std::string layer;              // L: the deleted checkpoint's image
    std::string layer_backing;      // L's parent layer (empty at the root)
    std::vector<std::string> pull;  // images that take L's data and move onto layer_backing
    bool has_keep = false;
    LayerMerge keep_merge = LayerMerge::commit_offline;
    std::string keep_owner;  // checkpoint id, or kNowOwner
    std::string keep_image;
    // Images backed by keep that must be re-pointed at L afterwards (header only): keep's
    // dependants the running VM does not have open (libvirt re-points the open one itself).
    std::vector<std::string> repoint;
};

struct CheckpointMergePlan {
    std::string checkpoint;  // id
    std::vector<DiskMergePlan> disks;
    // The merge changes the chain of the VM's current disks outside libvirt's block jobs (a
    // shut-off VM): its dirty bitmaps no longer describe the disk's history.
    bool resets_tracking = false;
};

// `running`: the VM is active (its current chain is open in QEMU: libvirt block jobs).
// `moved`: dependants whose file is no longer backed by the layer (an earlier attempt pulled
// them, then failed): they are never keep (committing one would write into its new backing),
// only pulled again, which changes nothing.
CheckpointMergePlan plan_checkpoint_merge(const CheckpointTree& tree, const Checkpoint& checkpoint,
                                          bool running, const std::set<std::string>& moved = {});

// The tree after the merge of `plan` (all disks done): the checkpoint gone, its children on
// its parent, `current` moved up when it was current, keep owners recorded on L's files.
CheckpointTree tree_after_merge(const CheckpointTree& tree, const CheckpointMergePlan& plan);

// Records one disk's keep commit in `tree` (the owner's image of that disk becomes L's file):
// what is saved after each commit so a failure later leaves a record a retry can finish.
void record_disk_merged(CheckpointTree& tree, const DiskMergePlan& disk);

// The checkpoints `subtree` deletes, leaves first, the checkpoint itself last.
std::vector<std::string> subtree_deletion_order(const CheckpointTree& tree, const std::string& id);

// Every image file the record names (layers and active overlays).
std::vector<std::string> images_in_record(const CheckpointTree& tree);

}  // namespace vmshadow::engine
