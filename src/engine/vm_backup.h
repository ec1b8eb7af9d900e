// SPDX-License-Identifier: MIT
#pragma once
// VM backup: the requester of live (and offline) VM backups — `vmshadow backup VM...`.
//
// This module is the data path of DESIGN.md's "live backup", driving the VSS model:
//   1. the previous restore point of each VM in this repository gives the BackupDocument
//      (its checkpoint name = backup stamp), the checkpoint XML and the disks, so the VM
//      writer can continue — or heal — the incremental chain;
//   2. writers: one vmwriter::VmWriter per VM plus the configured exec writers; provider:
//      vmwriter::PullBackupProvider; the vss::Coordinator runs Identify → PrepareForBackup
//      → PrepareForSnapshot → Freeze → snapshot → Thaw → PostSnapshot;
//   3. copy: each disk's NBD export (libvirt's, or qemu-nbd on the image of an offline VM) is
//      walked by virt::NbdExport — only allocated extents, only dirty ones for an incremental
//      disk — and streamed into a repo::BackupSession with several requests in flight; clean
//      extents are recorded as unchanged from the previous point, zero extents as holes. A
//      watcher polls each job's scratch every 100 ms and aborts the backup before the scratch
//      limit is crossed (QEMU would fail the guest's writes, not the backup).
//   4. BackupComplete → the jobs end, the checkpoints stay; the VM's files (inactive and live
//      domain XML, NVRAM, kernel/initrd, the memory image of an `image` backup, the checkpoint
//      XML, the BackupDocument) join the restore point; one commit record per run.
//   5. after the commit, this repository's superseded checkpoints of the VM are deleted. A
//      commit that fails deletes the new checkpoints instead (nothing references them).
// Without `group`, VMs are backed up one after another, each in its own run (a failed VM
// does not stop the others); with `group`, all VMs form one snapshot set and one commit:
// all frozen before any snapshot, all or nothing.
// It is not: the CLI's output (src/cli/backup_command.cpp) or restore.
//
// Thread-safety: one call at a time per repository object.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "repo/repository.h"
#include "virt/connection.h"
#include "virt/freeze_guard.h"
#include "vmwriter/method_choice.h"

namespace vmshadow::engine {

struct VmBackupOptions {
    std::vector<std::string> vms;
    std::optional<vmwriter::BackupMethod> method;  // nullopt: auto
    bool group = false;
    bool full = false;  // ignore the incremental chain (still deduplicated by hash)
    bool allow_saved_state = false;
    std::vector<std::string> disks;          // --disk: only these targets
    std::vector<std::string> exclude_disks;  // --exclude-disk
    std::string scratch_dir = "/var/tmp";
    // Scratch (copy-before-write) limit per VM in bytes; 0: 90% of the scratch directory's
    // free space when the backup starts, so the host volume never fills.
    std::uint64_t max_scratch = 0;
    std::string runtime_dir;  // backup job run directories; empty: the default
    virt::FreezeSettings freeze;
    std::filesystem::path writers_dir;  // exec writers; empty: none
    std::optional<std::filesystem::path> state_file;
    unsigned workers = 0;  // repository workers; 0: one per core
    // Progress (phases prepare, snapshot, copy — item "vm/disk", bytes of the export walked —
    // and commit), log and cancellation; nullptr: nobody watches, nobody cancels. A cancel
    // is honoured between phases and between pieces of the copy: the run is aborted the way
    // a failure is (guest thawed, job ended, its new checkpoint deleted, scratch removed,
    // nothing committed) and its error is ErrorKind::cancelled; after the commit it is
    // too late and the point stands.
    TaskContext* task = nullptr;
};

struct DiskOutcome {
    std::string target;
    std::string mode;  // "full" | "incremental"
    std::string note;  // why full, when a chain existed
    std::uint64_t size = 0;
    std::uint64_t bytes_read = 0;
    std::uint64_t bytes_added = 0;
};

struct VmBackupOutcome {
    std::string vm;
    std::optional<std::string> point;  // restore point id (hex) once committed
    std::string method;
    std::string consistency;
    std::vector<std::string> reasons;
    std::vector<std::string> notes;
    std::optional<std::int64_t> freeze_ms;   // freeze returned → thaw returned
    std::optional<std::int64_t> quiesce_ms;  // the agent's freeze call (guest hooks)
    std::optional<std::int64_t> paused_ms;   // vCPUs paused (image, group crash members)
    std::uint64_t bytes_read = 0;
    std::uint64_t bytes_added = 0;
    std::vector<DiskOutcome> disks;
    std::vector<std::string> skipped;  // "sda (CD-ROM)"
    std::optional<std::string> incremental_from;
    std::optional<std::string> checkpoint;
    double seconds = 0;
    std::optional<Error> error;
};

struct VmBackupReport {
    std::vector<VmBackupOutcome> vms;
    std::optional<Error> error;  // the first failure, if any
};

VmBackupReport backup_vms(repo::Repository& repo, const virt::Connection& connection,
                          const VmBackupOptions& options);

}  // namespace vmshadow::engine
