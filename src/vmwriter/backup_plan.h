// SPDX-License-Identifier: MIT
#pragma once
// VmBackupPlan: what the VM writer decided, in PrepareForBackup, about one VM's backup — the
// method and why, which disks are read and whether each is read in full or only its dirty
// extents, the checkpoint the incremental starts from and the one this backup creates.
//
// This module is: the plan as a value and its JSON form. The writer stores it in its
// component's backup_metadata (writer-private data of the VSS Backup Components Document),
// where the provider reads it to set up the backup job and the engine reads it to copy —
// the three agree on one record instead of each deciding again. It is not: the decision
// itself (vm_writer.cpp) or the job (pull_backup_provider.h).
//
// JSON names are stored on restore points (inside the BackupDocument): never change them.
// Thread-safety: plain values.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "vmwriter/method_choice.h"

namespace vmshadow::vmwriter {

struct PlannedDisk {
    std::string target;  // "vda"
    std::string path;    // the live image on the host
    std::string format;  // "qcow2", "raw"
    std::uint64_t size = 0;
    bool incremental = false;  // only the extents dirty since the plan's incremental_from
    std::string full_reason;   // why read in full although a chain exists (raw, added, …)
};

struct SkippedDisk {
    std::string target;
    std::string reason;  // "CD-ROM", "excluded with --exclude-disk", …
};

struct VmBackupPlan {
    BackupMethod method = BackupMethod::none;
    std::vector<std::string> reasons;  // why this method
    std::vector<PlannedDisk> disks;
    std::vector<SkippedDisk> skipped;
    std::optional<std::string> incremental_from;  // checkpoint the dirty bitmaps start at
    std::optional<std::string> new_checkpoint;    // created atomically with the backup job
    std::vector<std::string> chain_notes;         // what happened to the incremental chain
    std::string memory_file;                      // `image`: where the memory image goes

    bool live() const { return method != BackupMethod::offline && method != BackupMethod::none; }
    const PlannedDisk* disk(std::string_view target) const;
};

nlohmann::json plan_to_json(const VmBackupPlan& plan);
Result<VmBackupPlan> plan_from_json(const nlohmann::json& in);
Result<VmBackupPlan> parse_plan(std::string_view text);

}  // namespace vmshadow::vmwriter
