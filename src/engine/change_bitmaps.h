// SPDX-License-Identifier: MIT
#pragma once
// Change bitmaps: which persistent bitmaps of a shut-off VM's disk hold what changed since a
// checkpoint — engine-internal, for vm_changes.cpp's offline read (pure; unit-tested).
//
// A write after checkpoint C is recorded in C's bitmap and, depending on the libvirt
// version, in the bitmaps of checkpoints made later (of any chain: a repository's backup
// between two replica cycles makes one): the union of C's bitmap and every later one is
// what changed since C, whatever libvirt did with the earlier bitmaps when it made a new one.
// It is not: reading or merging the bitmaps (virt/qemu_img.h).

#include <optional>
#include <string>
#include <vector>

#include "virt/checkpoints.h"

namespace vmshadow::engine {

// The bitmaps of disk `target` to merge: `since`'s first, then those of every checkpoint made
// in the same second or later (`all` as virt::list_checkpoints gives them). nullopt when `since` is
// not in `all` or has no bitmap for the disk (a disk added since: read in full).
std::optional<std::vector<std::string>> bitmaps_since(const std::vector<virt::CheckpointInfo>& all,
                                                      const std::string& since,
                                                      const std::string& target);

// The temporary bitmap a change read of chain `chain_id` merges into (foreign to
// virt::checkpoint_repo, so no checkpoint code ever takes it for a checkpoint's).
std::string merged_bitmap_name(const std::string& chain_id);

}  // namespace vmshadow::engine
