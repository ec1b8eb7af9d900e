// SPDX-License-Identifier: MIT
#pragma once
// The plan of one VM restore, shared by its two ways: write beside and swap (vm_restore.cpp)
// and instant recovery (instant_recovery.cpp). restore_vm fills it in its first steps: what
// was read of the point, the VM's lock, the VM of the target name, and where each disk and file
// ends up.
//
// It is: plain data, internal to the engine's VM restore. It is not: a public API (callers use
// vm_restore.h), nor a step that changes the host — except WrittenFiles, which removes what a
// failed restore wrote.
//
// Thread-safety: one restore's own; never shared between threads.

#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "engine/vm_lock.h"
#include "engine/vm_point.h"
#include "engine/vm_restore.h"
#include "repo/manifest.h"
#include "virt/connection.h"
#include "virt/domain.h"
#include "virt/domain_xml.h"
#include "vmwriter/domain_rewrite.h"
#include "vss/backup_document.h"

namespace vmshadow::engine {

// In place, each file is written beside its target under this suffix, then swapped in.
inline constexpr const char* kRestoreSuffix = ".vmshadow-restore";

// Files this restore wrote; removed unless the restore got far enough to keep them.
struct WrittenFiles {
    std::vector<std::filesystem::path> paths;
    bool keep = false;
    ~WrittenFiles() {
        if (keep) return;
        for (const auto& p : paths) {
            std::error_code ec;
            std::filesystem::remove(p, ec);
        }
    }
};

inline bool bridge_exists(const std::string& name) {
    std::error_code ec;
    return !name.empty() &&
           std::filesystem::exists(std::filesystem::path("/sys/class/net") / name, ec);
}

// Where one disk or file of the point ends up, and where it is written first.
struct Placement {
    std::string name;  // disk target or file role
    std::filesystem::path final_path, written;
    const repo::DiskRecord* disk = nullptr;
    const repo::FileRecord* file = nullptr;
};

// Placements point into `opened.point`: a plan is never moved once placed.
struct VmRestorePlan {
    std::chrono::steady_clock::time_point started;
    VmPoint opened;  // holds the repository's shared lock
    std::string stored_xml;
    vss::BackupDocument document;
    virt::DomainDescription desc;
    bool in_place = true;
    std::optional<virt::Domain> existing;  // the VM of the target name
    VmLock vm_lock;
    bool finished_earlier = false;  // an interrupted in-place restore of this point was finished
    std::filesystem::path folder;   // --as: the folder the files go into
    std::vector<Placement> placements;

    const repo::RestorePoint& point() const { return opened.point; }
    const std::string& label() const { return opened.label; }
};

// 3.–6. PreRestore, swap, PostRestore (vm_restore_swap.cpp): the VM defined on the files
// written beside the old ones. In place, a journal makes the swap a transaction
// (restore_journal.h): at every instant the old VM or the new one is defined on complete
// files, and the next run finishes or rolls back what a killed one left.
Status swap_and_define(const virt::Connection& connection, const VmRestoreOptions& options,
                       const VmRestorePlan& plan, const vss::ComponentEntry& component,
                       const vmwriter::DomainRewriteSpec& spec, const std::string& final_xml,
                       const std::optional<std::filesystem::path>& memory_file,
                       WrittenFiles& written, VmRestoreResult& result);

// After a restore in place (written beside and swapped, or instant): the restored VM carries
// no stale checkpoints (checkpoint_forget.h). The records of `uuids` (the VM replaced, the
// point's VM; empty ones skipped) go, with the layer images the restored disks do not use.
// The restore itself succeeded: a failure here is a note in `result`, not an error.
void forget_replaced_checkpoints(const VmRestorePlan& plan, const std::set<std::string>& uuids,
                                 VmRestoreResult& result);

}  // namespace vmshadow::engine
