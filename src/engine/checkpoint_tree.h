// SPDX-License-Identifier: MIT
#pragma once
// CheckpointTree: vmshadow's own record of one VM's checkpoints (Hyper-V's checkpoint tree).
// libvirt 9.0 cannot revert to external snapshots, so vmshadow keeps the tree itself and
// libvirt sees only disks whose sources change (see docs/CHECKPOINTS.md).
//
// The picture: every checkpoint freezes one qcow2 layer per disk (an AVHDX). Creating a
// checkpoint makes the image the VM writes to now read-only — it *is* the checkpoint's layer,
// `CheckpointDisk::image` — and the VM continues on a new qcow2 overlay backed by it. So the
// disk at checkpoint C is exactly C's image read through its backing chain, and "now" is the
// VM's active overlays (`active`), whose parent is `current`. Applying C puts the VM on a
// fresh overlay above C's images; deleting C merges C's layer into what depends on it.
//
// This module is: the record (format version 1, JSON), its file
// (<dir>/<domain uuid>/tree.json; <dir> = $VMSHADOW_CHECKPOINT_DIR, else
// kDefaultCheckpointDir), replaced atomically (common/atomic_file.h) after every change, and
// pure queries on the tree. A standard checkpoint's memory file lives in the same folder
// (<id>.mem); overlays live beside the VM's disks (<disk stem>.now-<8 hex>.qcow2), and a
// layer image is the file the VM wrote to until the checkpoint (its original disk for the
// first one, an earlier overlay after that): a running QEMU's backing file cannot be renamed.
// It is not: the operations (checkpoint_ops.h) nor libvirt.
//
// Invariants (checked by load; a record that breaks one is ErrorKind::corruption naming the
// file): ids unique 8-hex; names unique (case-sensitive), 1–100 printable characters, not an
// id of another checkpoint; every parent names a checkpoint of the tree; no cycles; `current`
// names a checkpoint or is empty (no checkpoint yet, or the current one was deleted at the
// root); every checkpoint has one image per disk of `active`, same targets.
//
// Thread-safety: plain values; the file is written under the VM's lock (vm_lock.h).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::engine {

inline constexpr const char* kDefaultCheckpointDir = "/var/lib/vmshadow/checkpoints";
inline constexpr int kCheckpointTreeVersion = 1;
// `vm list` warns past these (Hyper-V's guidance: checkpoints are not backups).
inline constexpr int kCheckpointWarnDepth = 8;
inline constexpr std::int64_t kCheckpointWarnAgeSeconds = 30LL * 24 * 3600;

enum class CheckpointType { production, standard };
std::string_view checkpoint_type_name(CheckpointType type);  // "production", "standard"
std::optional<CheckpointType> parse_checkpoint_type(std::string_view text);

struct CheckpointDisk {
    std::string target;  // "vda"
    std::string image;   // absolute path of the qcow2 layer holding the disk at the checkpoint
};

struct Checkpoint {
    std::string id;    // 8 lowercase hex, unique within the VM
    std::string name;  // unique within the VM; default "<vm> - (<local time>)" like Hyper-V
    CheckpointType type = CheckpointType::production;
    std::int64_t created = 0;  // Unix seconds
    std::string parent;        // id, empty at the root
    // "application" (production: the guest's filesystems frozen through its agent),
    // "running-state" (standard: disks and memory), with why when it was a fallback.
    std::string consistency;
    std::string note;
    // Its delete began merging a dependant into its layer and did not finish (failed, was
    // cancelled or killed): the layer may hold some of that dependant's data, so the
    // checkpoint must not be applied; the same `checkpoint delete` again finishes it. Set
    // before the first commit into the layer starts.
    bool delete_unfinished = false;
    std::vector<CheckpointDisk> disks;
    std::string memory_file;  // standard only: libvirt's save image of the running VM
    std::string domain_xml;   // the inactive domain XML at the checkpoint (apply restores it)
};

struct CheckpointTree {
    std::string vm_uuid;
    std::string vm_name;
    std::vector<Checkpoint> checkpoints;  // creation order
    std::string current;                  // the parent of "now"; empty when none
    std::vector<CheckpointDisk> active;   // the images the VM writes to now
    // Set by apply, by a create while the VM is off (qemu-img's overlay) and by a delete
    // that had to rebase outside libvirt's view: the dirty bitmaps no longer describe the
    // disk's history, so the next backup of each repository
    // and the next replica cycle must be full; this says why ("returned to checkpoint 'x' at
    // <time>"). Cleared by nothing: backups compare its time with their last point's.
    std::int64_t tracking_reset_at = 0;
    std::string tracking_reset_reason;
};

// <dir>/<uuid>: the VM's checkpoint folder.
std::filesystem::path checkpoint_folder(const std::string& vm_uuid);

// The VM's tree; an empty tree (no checkpoints, vm_uuid set) when it has no record.
Result<CheckpointTree> load_checkpoint_tree(const std::string& vm_uuid);
Status save_checkpoint_tree(const CheckpointTree& tree);
// Removes the record and the folder (memory files). Not the layer images: the caller's.
Status remove_checkpoint_tree(const std::string& vm_uuid);

// JSON text of the record and back (the file's content; unit-tested on their own).
std::string checkpoint_tree_to_json(const CheckpointTree& tree);
Result<CheckpointTree> checkpoint_tree_from_json(std::string_view text, const std::string& source);

// The command that finishes the unfinished delete of `checkpoint` (quoted when it must be).
std::string finish_delete_command(const CheckpointTree& tree, const Checkpoint& checkpoint);
// Whether `checkpoint` may be applied: conflict naming it and the command that finishes its
// delete when that stopped part-way (its layer may hold a dependant's data).
Status check_can_apply(const CheckpointTree& tree, const Checkpoint& checkpoint);

// A checkpoint by name or id (not_found naming the VM and listing the names).
Result<const Checkpoint*> find_checkpoint(const CheckpointTree& tree, std::string_view name_or_id);
std::vector<const Checkpoint*> checkpoint_children(const CheckpointTree& tree,
                                                   const std::string& id);
// The checkpoints from the root to `current` (the layers under "now"), root first.
std::vector<const Checkpoint*> checkpoint_path_to_current(const CheckpointTree& tree);
// A fresh id not used in the tree.
std::string new_checkpoint_id(const CheckpointTree& tree);
// What `vm list` says about the tree (depth past kCheckpointWarnDepth, oldest past
// kCheckpointWarnAgeSeconds), or empty.
std::vector<std::string> checkpoint_warnings(const CheckpointTree& tree, std::int64_t now);

}  // namespace vmshadow::engine
