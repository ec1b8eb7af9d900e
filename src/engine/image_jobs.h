// SPDX-License-Identifier: MIT
#pragma once
// Image-file backup and restore: the requester for disk image files (raw, qcow2) that no
// running VM holds.
//
// This module is: reading images through qemu-nbd + libnbd (allocation-aware: holes and zero
// clusters are never read) into a repo::BackupSession, and writing a restore point's disk
// back, sparse, as raw or qcow2 (qcow2 through qemu-nbd, never a hand-written parser). It is
// not: the live-VM engine (that one feeds the same BackupSession from libvirt's NBD export).
//
// Names: disks are "disk0", "disk1"… in argument order; the previous point of the same name
// (the `--name`) is the dedup base, so unchanged chunks are neither compressed nor stored.
// Restore writes to "<out>.vmshadow-partial" and renames it on success, so a failed or
// interrupted restore never leaves a file that looks complete; a block device is written
// into (raw). What may be at <out> is restore_target.h's to decide.
//
// Sizes: a disk is its source's exact size in bytes. QEMU reports a raw file's size rounded
// up to 512 bytes, so a raw source's size is taken from the file (or device) itself; a raw
// restore is the source byte for byte, whatever its size. qcow2 sizes are multiples of 512.
//
// Thread-safety: one call at a time per repository object.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "repo/backup_session.h"
#include "repo/repository.h"

namespace vmshadow::engine {

struct ImageBackupOptions {
    std::vector<std::string> files;
    std::string name;
    unsigned workers = 0;  // 0 = one per core
    // Phases "read" (bytes of all files) and "commit"; a cancel stops before the commit:
    // nothing is referenced, the session's partial packs are removed.
    TaskContext* task = nullptr;
};

struct ImageBackupResult {
    repo::RestorePoint point;
    std::vector<repo::DiskStats> disks;
    double seconds = 0;
};

Result<ImageBackupResult> backup_images(repo::Repository& repo, const ImageBackupOptions& options);

struct ImageRestoreOptions {
    std::string point;  // id, unique prefix or NAME@latest
    std::string disk;   // empty: the point's only disk
    std::string output;
    std::string format = "raw";  // raw | qcow2
    bool force = false;          // replace an existing regular file, or write into a block device
    unsigned workers = 0;
    // Phase "write" (bytes of the disk); a cancel stops the write: the partial file is
    // removed and an existing target is untouched (a block device is left partly written,
    // and the error says so).
    TaskContext* task = nullptr;
};

struct ImageRestoreResult {
    repo::RestorePoint point;
    std::string disk;
    std::uint64_t size = 0;
    double seconds = 0;
    std::vector<std::string> notes;  // e.g. a qcow2 output's rounded virtual size
};

Result<ImageRestoreResult> restore_image(repo::Repository& repo,
                                         const ImageRestoreOptions& options);

}  // namespace vmshadow::engine
