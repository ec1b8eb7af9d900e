// SPDX-License-Identifier: MIT
#pragma once
// Checkpoints: libvirt checkpoints (persistent QEMU dirty bitmaps in qcow2 disks) as the
// live-backup provider uses them for incremental backups — vmshadow's Resilient Change Tracking.
//
// This module is: naming vmshadow's checkpoints, listing a domain's checkpoints, reading the
// full XML a restore point stores, deleting, redefining from stored XML, and a health check
// of one checkpoint before an incremental. It is not: the choice of which checkpoint an
// incremental starts from (the engine decides from its restore points), nor creating
// checkpoints with a backup (they are created atomically with its job, see backup_job.h;
// create_checkpoint is for a chain that starts outside any backup).
//
// Naming — never change: `vmshadow-<repo8>-<YYYYmmddTHHMMSS.mmm>Z`, repo8 the first 8 lower-hex
// characters of the repository id. The bitmap in each qcow2 carries the same name (libvirt
// requires it). Two repositories backing up one VM keep separate chains; a checkpoint whose
// name does not parse is foreign (another tool's) and vmshadow never deletes it.
//
// Errors name the VM and the checkpoint. Thread-safety: free functions over a Domain; one
// thread per Domain at a time.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "virt/domain.h"

namespace vmshadow::virt {

// The checkpoint name for a backup into repository `repo_id` (at least 8 hex characters) at
// time `at`. invalid_argument when the repository id is not hex.
Result<std::string> make_checkpoint_name(std::string_view repo_id,
                                         std::chrono::system_clock::time_point at);
// The repo8 of a vmshadow checkpoint name; nullopt for foreign names.
std::optional<std::string> checkpoint_repo(std::string_view name);
// Whether `name` was made by vmshadow for the repository `repo_id` (first 8 characters).
bool checkpoint_belongs_to(std::string_view name, std::string_view repo_id);

struct CheckpointDisk {
    std::string target;  // "vda"
    std::string bitmap;  // bitmap name; empty when checkpoint='no' (e.g. raw disks)
};

struct CheckpointInfo {
    std::string name;
    std::optional<std::string> parent;
    std::int64_t creation_time = 0;  // seconds since the epoch
    std::vector<CheckpointDisk> disks;
    std::optional<std::string> repo;  // repo8 when vmshadow made it; nullopt: foreign
    bool ours() const { return repo.has_value(); }
};

// Parses <domaincheckpoint> XML (pure; unit-testable).
Result<CheckpointInfo> parse_checkpoint_xml(std::string_view xml);

// Every checkpoint of the domain, oldest first.
Result<std::vector<CheckpointInfo>> list_checkpoints(const Domain& domain);
// One checkpoint; nullopt when it does not exist.
Result<std::optional<CheckpointInfo>> find_checkpoint(const Domain& domain, std::string_view name);

// The full XML of a checkpoint, secure fields and the <domain> included: what a restore point
// stores so that the checkpoint can be redefined after a restore or a migration.
Result<std::string> checkpoint_xml(const Domain& domain, std::string_view name);

// Deletes one of `repo_id`'s checkpoints (refuses any other name with `invalid_argument`).
// A running VM: libvirt removes the bitmaps too; when they are already gone (QEMU crashed),
// only the metadata is deleted. A VM that is not running: the metadata is deleted
// (METADATA_ONLY) and the bitmaps are removed from the qcow2 files with qemu-img, so no
// orphan bitmap keeps recording. Deleting a checkpoint that does not exist succeeds.
Status delete_checkpoint(const Domain& domain, std::string_view name, std::string_view repo_id);
// The same without the ownership check: for the provider's own half-made checkpoints (a failed
// backup's) whose name the caller created. Refuses foreign names all the same.
Status delete_own_checkpoint(const Domain& domain, std::string_view name);

// Creates checkpoint `name` of a running (or paused) VM on its own, outside a backup job: a
// bitmap in each of `bitmap_disks` (targets), no bitmap for the VM's other disks. For a
// chain that starts at an instant nobody reads (the reverse chain a replica failover makes).
// Returns the checkpoint's full XML (checkpoint_xml()). Implemented in checkpoint_create.cpp.
Result<std::string> create_checkpoint(const Domain& domain, std::string_view name,
                                      const std::vector<std::string>& bitmap_disks);

// Re-inserts a checkpoint from XML saved by checkpoint_xml(). A running VM: with
// REDEFINE_VALIDATE, so libvirt refuses when the bitmaps are missing or broken.
Status redefine_checkpoint(const Domain& domain, const std::string& xml);

enum class CheckpointState {
    usable,   // metadata present, every bitmap present and consistent
    missing,  // no such checkpoint
    broken,   // a bitmap is missing or inconsistent (QEMU crash, out-of-band image edit)
};

struct CheckpointHealth {
    CheckpointState state = CheckpointState::missing;
    std::string reason;  // for broken/missing: which disk and why, fit for a message
    bool usable() const { return state == CheckpointState::usable; }
};

// Whether an incremental backup can start from `name`. A running VM: libvirt computes each
// bitmap's dirty size (XML_SIZE), which it can only do for present, consistent bitmaps. A
// VM that is not running: the bitmaps stored in its qcow2 files (qemu-img info), where
// "in-use" means QEMU did not close the image cleanly. libvirt's own check at backup begin
// (VIR_ERR_CHECKPOINT_INCONSISTENT) remains the final word.
Result<CheckpointHealth> check_checkpoint(const Domain& domain, std::string_view name);

}  // namespace vmshadow::virt
