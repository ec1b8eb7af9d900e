// SPDX-License-Identifier: MIT
#pragma once
// Forgetting a VM's checkpoints after its disks were replaced (a restore in place): its
// checkpoint record and the layer images no longer used. A restored VM carries no stale
// checkpoints: the record would name files the VM no longer uses, and apply would throw away
// the restored state for an older one.
//
// This module is: removing the record (checkpoint_tree.h's folder, memory files with it) and
// every image the record names that is neither one of `in_use` nor in their backing chains
// (read from the images' headers). It is not: libvirt's own checkpoint metadata (the restore's
// define drops it).
//
// Thread-safety: under the VM's lock (the restore holds it).

#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::engine {

// What was removed, in words for the restore's notes (empty when the VM had no record).
Result<std::vector<std::string>> forget_checkpoints(const std::string& vm_uuid,
                                                    const std::vector<std::string>& in_use);

}  // namespace vmshadow::engine
