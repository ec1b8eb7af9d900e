// SPDX-License-Identifier: MIT
#pragma once
// File-level access to a restore point: `vmshadow mount` and `vmshadow umount`.
//
// This module is: mounting the filesystems of one disk of a restore point read-only, without
// restoring the disk, and tearing such a mount down from any later process. It is not:
// choosing the point (the caller resolves it) nor serving NBD (the nbdkit plugin does).
//
// How (these hosts have no kernel NBD client):
//   nbdkit + nbdkit-vmshadow-plugin.so on a private Unix socket, with a throwaway overlay so
//     a dirty journal can be replayed without touching the repository
//   → nbdfuse exposes the export as a file, <state>/fuse/disk.raw
//   → the disk is probed with blkid (filesystem on the whole disk) or sfdisk --json (a
//     partition table); each filesystem gets a loop device (losetup --offset/--sizelimit)
//   → mount -o ro,nosuid,nodev,noexec on DIR (a whole-disk filesystem) or DIR/partN (the
//     partition numbered N); partitions without a mountable filesystem are skipped and
//     reported.
// State: <run dir>/<16 hex of SHA-256(DIR)>/ (run dir: /run/vmshadow/mount) holds
// state.json — the pids and start times of nbdkit and nbdfuse, the socket, the loop
// devices, the mounts and the directories it made, rewritten after each step — plus the
// socket, the overlay and the daemons' logs. unmount reads it and undoes everything in
// reverse: unmount, remove partN dirs, detach loops, fusermount -u, stop nbdfuse, stop
// nbdkit (which releases the repository's shared lock), remove the state directory. A mount
// that fails half-way is torn down the same way before the error is returned.
//
// Errors (one line each): DIR missing (not_found), not a directory or not empty
// (invalid_argument), already mounted (conflict), no filesystem found (not_found), a
// filesystem still in use at umount (conflict: nothing after it is torn down, run umount
// again), nbdkit's own error (its kind, e.g. locked while gc runs).
//
// Thread-safety: one call at a time per DIR.

#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::exporter {

inline constexpr const char* kMountRunDir = "/run/vmshadow/mount";

struct MountRequest {
    std::string repo;      // repository path
    std::string point;     // full restore point id
    std::string disk;      // disk name
    std::string dir;       // mount point (an empty directory)
    std::string password;  // encrypted repositories: given to nbdkit in its environment
    // "NAME=value" for nbdkit's environment: an "s3:…" repository's options
    // (repo::storage_environment), never secrets.
    std::vector<std::string> environment;
    std::string plugin;  // empty: find_plugin()
    std::string run_dir = kMountRunDir;
};

struct MountedFilesystem {
    std::string name;  // "disk" (whole-disk filesystem) or "partN"
    std::string path;  // DIR or DIR/partN
    std::string type;  // ext4, vfat, xfs…
};

struct SkippedPartition {
    std::string name;
    std::string reason;
};

struct MountInfo {
    std::string dir;
    std::vector<MountedFilesystem> filesystems;
    std::vector<SkippedPartition> skipped;
};

Result<MountInfo> mount_disk(const MountRequest& request);
Status unmount_disk(const std::string& dir, const std::string& run_dir = kMountRunDir);

// Where the state of a mount on `dir` (an absolute, canonical path) lives.
std::string mount_state_dir(const std::string& dir, const std::string& run_dir = kMountRunDir);

}  // namespace vmshadow::exporter
