// SPDX-License-Identifier: MIT
#pragma once
// Restore targets: what a restore may do with a path it writes to. Every restore write goes
// through here — `image restore`'s OUT, a VM restore's disks and boot files (in place, or in
// the --as/--to folder), instant recovery's local images — so the rules live in one place.
//
// The rules (README "Restore targets"):
//   * nothing there: a new regular file is created (beside it first, renamed in);
//   * a regular file: replaced by rename, only when the command allows it (image restore
//     --force, VM restore --replace in place);
//   * a block device, or a symbolic link that resolves to one (LVM's /dev/VG/LV): written
//     into, raw, when the command allows it (image restore --force); it must hold the disk;
//   * anything else — a character device, FIFO, socket, directory, or a symbolic link to
//     anything but a block device (dangling included) — is refused with invalid_argument
//     (exit 2) naming the path and its type, before anything is written. A link is never
//     replaced: the restore would leave the file it points to as it was.
// The path is looked at with lstat, so a link is seen as a link; files are created with
// O_EXCL | O_NOFOLLOW, and the final rename re-checks the target (a FIFO or link put there
// while the restore ran is refused, not replaced).
//
// Thread-safety: plain functions.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace vmshadow::engine {

enum class TargetKind {
    absent,
    regular,
    block_device,  // the path, or the link it is, leads to a block device
    directory,
    char_device,
    fifo,
    socket,
    symlink,  // to anything but a block device, or dangling
    other,
};

// "a character device", "a FIFO"… for messages.
std::string_view describe(TargetKind kind);

struct RestoreTarget {
    std::string path;  // as given
    TargetKind kind = TargetKind::absent;
    std::string device;             // block_device: the node written (a link's target, resolved)
    std::uint64_t device_size = 0;  // block_device
    std::string link_target;        // a symbolic link: what it points to
};

// Looks at `path` without following it (a link is followed only to see whether it leads to a
// block device). Fails only when the path cannot be looked at (permission, I/O).
Result<RestoreTarget> inspect_restore_target(const std::string& path);

// invalid_argument naming the path and its type unless the target is absent, a regular file
// or, when `allow_device`, a block device.
Status refuse_unwritable(const RestoreTarget& target, bool allow_device);

// Just before a temp file is renamed onto `path`: it must still be absent, or a regular file
// when `may_replace`; anything else put there meanwhile is refused (its kind's error).
Status recheck_before_rename(const std::string& path, bool may_replace);

// Creates `path` as a new regular file (O_CREAT | O_EXCL | O_NOFOLLOW). A leftover regular
// file or link of that name (a temp name of ours) is removed first; anything else there is
// refused.
Result<UniqueFd> create_new_file(const std::string& path);

// Opens a block device target to write `needed` bytes into it: exclusively (O_EXCL: a
// device that is mounted or held by another program is refused with conflict), and refused
// with invalid_argument when it is smaller than `needed`.
Result<UniqueFd> open_device_target(const RestoreTarget& target, std::uint64_t needed);

// Makes [offset, offset + length) of a block device read as zeros (BLKZEROOUT where the
// device supports it, else written zeros).
Status zero_device_range(int fd, std::uint64_t offset, std::uint64_t length,
                         const std::string& name);

}  // namespace vmshadow::engine
