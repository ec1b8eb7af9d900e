// SPDX-License-Identifier: MIT
#pragma once
// VM restore: the requester of `vmshadow restore POINT [--as NAME] [--to DIR] [--replace]
// [--start]` — a whole VM back from a restore point, the Hyper-V way (DESIGN.md "PreRestore /
// restore files / PostRestore").
//
// This module is the sequence:
//   1. checks before anything is written: the point is a VM's, a VM of the target name exists
//      only with --replace, the --as folder's files do not exist;
//   2. every disk (sparse, qcow2 or raw, chunks verified as they are read; parallel) and file
//      (NVRAM, kernel/initrd/dtb; the memory image of an `image` point restored in place) is
//      written BESIDE the old ones ("<path>.vmshadow-restore" in place, the final names in the
//      --as folder) and checked: all, or the restore stops, removes what it wrote and names
//      what is missing — the original VM untouched;
//   3. in place, a journal (restore_journal.h) records the old definition and every file's
//      names before anything changes; the old files are hard-linked aside;
//   4. PreRestore (vmwriter::VmRestoreWriter through vss::RestoreCoordinator): the VM of that
//      name is stopped, still defined;
//   5. commit and swap (in place): the new definition on the staged files replaces the old one
//      in one define (checkpoint, snapshot and managed-save metadata dropped: the next backup
//      is full), then each restored file is linked over its target;
//   6. PostRestore: the rewritten XML (vmwriter/domain_rewrite.h: disk paths, boot files, a new
//      identity for --as, NICs whose network is gone kept with their link down) is defined, and
//      the memory image resumed (an `image` point in place: it continues where it was) or the
//      VM started with --start. An `image` point restored --as cold-boots, and says so.
// At every instant the old VM or the new one is defined on complete files; the next in-place
// restore of that VM rolls back or finishes one that was killed (restore_journal.h). Every
// run holds the VM's lock (vm_lock.h) from before it touches anything.
// A failure before PreRestore leaves no stray file and the original as it was; after it, the
// error says plainly what state things are in and how to retry.
// Instant recovery (--instant) instead runs the VM at once from the repository and copies its
// disks while it runs: instant_recovery.h.
// It is not: the XML rules (vmwriter) or reading chunks (repo).
//
// Thread-safety: one call at a time per repository object.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "repo/repository.h"
#include "virt/connection.h"

namespace vmshadow::engine {

struct VmRestoreOptions {
    std::string point;                   // id, unique prefix or VM@latest
    std::optional<std::string> as_name;  // --as
    std::string to_dir;                  // --to (with --as); empty: <disks' folder>/<NAME>
    bool replace = false;
    bool start = false;
    // Instant recovery: run the VM from the repository at once, copy its disks to local qcow2
    // images while it runs, then switch to them without stopping it. Only for a VM that does
    // not exist (--as, or in place after it was removed) — or to resume one: the same
    // options again after a server died (the VM was paused) or vmshadow was killed.
    bool instant = false;
    std::uint64_t copy_bandwidth = 0;  // instant: bytes/s cap of the background copy; 0: none
    std::string password;  // encrypted repositories: handed to the NBD servers (instant)
    std::string format = "qcow2";
    unsigned workers = 0;
    std::optional<std::string> state_file;  // writer state (vmshadow writers)
    // Progress (phase "write" per disk; instant recovery: "copy" per disk), log and
    // cancellation; nullptr: nobody watches. A cancel before the swap leaves the old VM as it
    // was and removes what was written; after the swap began it is not honoured (the journal
    // finishes). An instant recovery cancelled during its copy stops watching: the VM runs on
    // its exports and the same command resumes it, as after a kill.
    TaskContext* task = nullptr;
};

struct RestoredFile {
    std::string name;  // disk target or file role
    std::string path;
    std::uint64_t size = 0;
};

struct VmRestoreResult {
    std::string point;  // full id
    std::string source_vm;
    std::string vm;
    std::string consistency;
    std::vector<RestoredFile> disks;
    std::vector<RestoredFile> files;
    std::vector<std::string> notes;
    bool replaced = false;
    bool resumed = false;
    bool started = false;
    bool instant = false;
    double seconds = 0;
};

Result<VmRestoreResult> restore_vm(repo::Repository& repo, const virt::Connection& connection,
                                   const VmRestoreOptions& options);

}  // namespace vmshadow::engine
