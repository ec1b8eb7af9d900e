// SPDX-License-Identifier: MIT
#pragma once
// Shadow copies of running VMs — vssadmin's `create shadow`, `list shadows`, `delete
// shadows` — and the live copy of one disk through a shadow (docs/SHADOW-COPIES.md).
//
// A shadow is a libvirt pull-mode backup job without a checkpoint (virt/shadow_job.h): QEMU's
// copy-before-write keeps the disks' image at the shadow's instant, the guest's overwritten
// blocks going to scratch images (the diff area), and serves it read-only over NBD on a Unix
// socket. libvirt keeps the job after `shadow create` returns, until `shadow delete`.
//
// - create: under the VM's lock (vm_lock.h), freezes the guest through its agent around the
//   job's begin (virt/freeze_guard.h: a thaw guardian thaws it whatever happens) —
//   "application" consistency; when the agent cannot freeze, or the freeze window broke, the
//   shadow is "crash"-consistent and the record says why. Then it starts the shadow's
//   watcher and, with a mount folder, exposes each disk as the read-only file DIR/<disk>
//   (nbdfuse, recorded before it runs: common/process.h start_daemon).
// - The watcher (a detached `vmshadow __shadow-watch ID` process in its own session, recorded
//   before it runs) polls the job's temp-space statistics and the scratch images' allocation
//   every 50 ms and aborts the job before the diff area reaches its maximum (a margin of a
//   quarter of it, at most 512 MiB) or the scratch filesystem runs low, recording "dropped"
//   with why and when: the guest never sees a write error. It also records a job that ended
//   on its own (the VM stopped).
// - Every shadow command first sweeps: an active shadow whose watcher is gone (killed, host
//   rebooted) cannot be bounded and is deleted, and the command says so; a dropped shadow's
//   record is removed a week after its drop (with whatever it left: mounts, scratch).
// - delete: stops the watcher, unmounts, aborts the job (only if it still serves this
//   shadow's socket), removes the scratch images, the socket folder and the record.
// - copy: a shadow of one disk, copied sparse (block status: holes and zeroes are not
//   written; qcow2 through qemu-nbd), its progress in DEST.vmshadow-copy after each flushed
//   stretch; --resume continues on the SAME shadow or refuses; at the end the copy's SHA-256
//   is compared with the shadow's and the shadow is deleted.
//
// Errors: one line naming the VM, shadow or file and what to do. Thread-safety: one call at a
// time per process (the shadow folder's lock orders processes).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "engine/shadow_record.h"

namespace vmshadow::engine {

// The hidden command the watcher runs as: `vmshadow __shadow-watch ID [--connect URI]`.
inline constexpr const char* kShadowWatchCommand = "__shadow-watch";

struct ShadowSettings {
    std::string connect_uri;
    std::filesystem::path shadow_dir = default_shadow_dir();
    std::filesystem::path scratch_dir = "/var/tmp";
    std::string executable;  // the vmshadow binary the watcher runs ("" = this one)
};

// What the sweep did, for the command to print ("shadow 3fa91c0e … was deleted: …").
using ShadowNotes = std::vector<std::string>;

struct ShadowCreateRequest {
    std::string vm;
    std::vector<std::string> disks;  // empty: every disk a backup would take
    std::uint64_t max_size = 0;      // 0: 90 % of the scratch filesystem's free space
    std::string mount_dir;           // "": no files
};

struct ShadowCreated {
    ShadowRecord record;
    ShadowNotes notes;
};

Result<ShadowCreated> create_shadow(const ShadowSettings& settings,
                                    const ShadowCreateRequest& request);

struct ShadowListEntry {
    ShadowRecord record;
    std::uint64_t diff_used = 0;  // active: what the diff area takes now
};
struct ShadowList {
    std::vector<ShadowListEntry> shadows;
    ShadowNotes notes;
};
Result<ShadowList> list_shadows(const ShadowSettings& settings);

// Deletes one shadow (id) or every shadow (id empty); returns the ids deleted and notes.
struct ShadowDeleted {
    std::vector<std::string> ids;
    ShadowNotes notes;
};
Result<ShadowDeleted> delete_shadows(const ShadowSettings& settings, const std::string& id);

// Deletes active shadows whose watcher is gone (see above), and removes the records of shadows
// dropped more than a week before `now` (shadow_record.h: dropped_shadow_expired); the caller
// holds the folder lock. Without `now`, the current time.
ShadowNotes sweep_shadows(const ShadowSettings& settings, std::int64_t now);
ShadowNotes sweep_shadows(const ShadowSettings& settings);

// The watcher process's body; returns its exit code.
int run_shadow_watcher(const ShadowSettings& settings, const std::string& id);

// The diff area's drop point for a maximum: the maximum less a margin of a quarter of it,
// at most 512 MiB (the guest writes at most that much between two polls and the abort).
std::uint64_t shadow_drop_point(std::uint64_t max_size);

struct ShadowCopyRequest {
    std::string vm;
    std::string disk;
    std::filesystem::path dest;
    std::string format = "qcow2";  // or "raw"
    bool resume = false;
    std::uint64_t max_size = 0;
};

struct ShadowCopyReport {
    std::string shadow_id;
    std::string consistency;
    std::string consistency_reason;
    std::uint64_t size = 0;         // the disk's virtual size
    std::uint64_t data_copied = 0;  // bytes written by this run (holes and zeroes skipped)
    std::uint64_t resumed_at = 0;   // where this run started (0 unless --resume)
    std::string sha256;             // of the disk at the shadow's instant, equal to the copy's
    ShadowNotes notes;
};

// The progress file: DEST + ".vmshadow-copy".
std::filesystem::path copy_progress_path(const std::filesystem::path& dest);

Result<ShadowCopyReport> copy_through_shadow(const ShadowSettings& settings,
                                             const ShadowCopyRequest& request, TaskContext& task);

}  // namespace vmshadow::engine
