// SPDX-License-Identifier: MIT
#pragma once
// qemu-img, run as a child process, for what libvirt cannot do for the live-backup provider:
// pre-creating scratch images and reading or removing the persistent dirty bitmaps stored
// in a qcow2 file (a shut-off VM's checkpoints).
//
// This module is: `qemu-img create/info/bitmap` through common/process.h's run_tool (no
// shell; the child killed and reaped on every path, bounded by a timeout).
// It is not: a qcow2 parser (vmshadow parses no qcow2), nor image copying.
//
// Errors: `unavailable` when qemu-img cannot be started (qemu-utils missing), `timeout`,
// `io` with the command and the last line of its stderr otherwise; messages name the file.
// Thread-safety: free functions, safe from any thread.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::virt {

// Creates a qcow2 image of `virtual_size` bytes with 64 KiB clusters (the cluster size the
// NBD reader aligns to). Fails with `conflict` when `path` exists: scratch paths are unique.
Status create_qcow2(const std::string& path, std::uint64_t virtual_size);

struct ImageBitmap {
    std::string name;
    bool in_use = false;  // "in-use": written by a QEMU that did not close the image cleanly
    bool auto_ = false;   // "auto": recording (enabled)
};

// The persistent bitmaps stored in a qcow2 file (empty for other formats).
// `force_share` (-U) reads an image a running QEMU holds open; its answer then lags: bitmaps
// created since QEMU opened the image are not stored yet, and loaded ones show "in-use".
Result<std::vector<ImageBitmap>> image_bitmaps(const std::string& path, bool force_share);

// Removes one persistent bitmap from a qcow2 file that no process has open.
Status remove_image_bitmap(const std::string& path, const std::string& bitmap);

// Adds the persistent bitmap `bitmap`, disabled (it records nothing), to a qcow2 file that no
// process has open, holding the union of the bitmaps `sources` of the same file: what changed
// since the oldest of them, for a shut-off VM's change read. Fails with `conflict` when
// `bitmap` exists already.
Status add_merged_bitmap(const std::string& path, const std::string& bitmap,
                         const std::vector<std::string>& sources);

}  // namespace vmshadow::virt
