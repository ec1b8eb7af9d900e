// SPDX-License-Identifier: MIT
#pragma once
// Instant recovery: `vmshadow restore POINT --instant` (restore_vm with options.instant). The VM
// runs at once from NBD exports of the point (export/point_server.h: nbdkit with a local overlay
// per disk, outliving vmshadow) while libvirt block copies move each disk to its local qcow2
// image, then pivots and defines the VM. Its state is <folder>/.vmshadow-instant-NAME/
// instant.json, written (fsync) before any server starts and naming each server before it
// runs: a server that dies pauses the VM (no write lost) and the command fails naming how to
// resume — the same command again, which also picks up a run whose vmshadow was killed, at any
// moment (no VM yet: its servers are stopped and it starts over). `repo unlock` asks this
// module about a lock held by such a server.
//
// It is not: the checks and placements every restore shares (vm_restore.cpp, which calls in
// here once they passed), the XML rules (vmwriter) or reading chunks (repo).
//
// Thread-safety: one call at a time per repository object.

#include <optional>
#include <string>

#include "common/error.h"
#include "engine/vm_restore.h"
#include "engine/vm_restore_plan.h"
#include "repo/repository.h"
#include "virt/connection.h"

namespace vmshadow::engine {

// restore_vm's --instant path, once the point is read, the VM locked and every file placed:
// resumes an earlier run of the same command, or starts one.
Result<VmRestoreResult> restore_vm_instant(repo::Repository& repo,
                                           const virt::Connection& connection,
                                           const VmRestoreOptions& options, VmRestorePlan& plan,
                                           VmRestoreResult result);

// `repo unlock` and the instant recovery whose NBD server holds a repository lock: the
// lock's operation ("nbd export for instant recovery (record PATH) of 'NAME'") names the
// run's record; nullopt for any other lock.
std::optional<std::string> instant_record_of_lock(const std::string& operation);

struct AbandonedInstantRun {
    bool stopped = false;  // its servers were stopped: no VM ran on them
    std::string message;   // what was done, or why the servers stay and how to end them
};

// The servers of the instant recovery recorded at `record` serve no VM when vmshadow was
// killed before its VM was created, or the VM is gone: they only hold the repository's lock,
// so they are stopped (the record stays: the same `restore --instant` cleans up and starts
// over). While the run's VM exists they stay, and the message names the command that
// finishes the recovery.
Result<AbandonedInstantRun> stop_abandoned_instant_servers(const virt::Connection& connection,
                                                           const std::string& record);

}  // namespace vmshadow::engine
