// SPDX-License-Identifier: MIT
#pragma once
// Gathers the facts method selection needs about one VM: its state, its disks (with sizes,
// which are backed up, which files are missing), its guest agent (channel, answering,
// filesystems) and the scratch space on the host. Problems with one VM become facts (a
// missing disk, a silent agent), not errors; only libvirt failing outright is an error.

#include <chrono>
#include <string>

#include "common/error.h"
#include "virt/domain.h"
#include "vmwriter/method_choice.h"

namespace vmshadow::vmwriter {

struct FactOptions {
    std::string scratch_dir = "/var/tmp";
    std::chrono::seconds agent_timeout{5};
};

Result<VmFacts> gather_facts(const virt::Domain& domain, const FactOptions& options);

}  // namespace vmshadow::vmwriter
