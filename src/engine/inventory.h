// SPDX-License-Identifier: MIT
#pragma once
// Inventory: what `vmshadow vm list` reports — every VM (or the named ones) with its facts
// and the backup method it would get now, with reasons. VMs are probed in parallel so a
// few silent guest agents cost one agent timeout, not one each.

#include <string>
#include <vector>

#include "common/error.h"
#include "vmwriter/method_choice.h"

namespace vmshadow::engine {

struct InventoryRequest {
    std::string connect_uri;
    std::vector<std::string> vms;  // empty: every VM
    std::string scratch_dir = "/var/tmp";
    bool allow_saved_state = false;
};

struct VmReport {
    std::string uuid;
    bool persistent = true;
    vmwriter::VmFacts facts;
    vmwriter::MethodChoice choice;
    // Its checkpoints (checkpoint_tree.h): how many, and what `vm list` warns about (a chain
    // too deep, a checkpoint too old: checkpoints are not backups; an unreadable record).
    std::size_t checkpoints = 0;
    std::vector<std::string> checkpoint_warnings;
};

// Fails when libvirt can't be reached or a named VM does not exist.
Result<std::vector<VmReport>> take_inventory(const InventoryRequest& request);

}  // namespace vmshadow::engine
