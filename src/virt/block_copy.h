// SPDX-License-Identifier: MIT
#pragma once
// Block copy: moving a running VM's disk to another image while it keeps running
// (virDomainBlockCopy + pivot) — how instant recovery switches a VM from its repository
// export to local disks without stopping it.
//
// This module is: start a copy of one disk into a pre-created image (REUSE_EXTERNAL; QEMU
// mirrors the guest's writes into it while copying), read its progress, and pivot once the
// copy is in sync (the VM then runs on the new image), or abort it. A transient domain needs
// no flag; a persistent one gets VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB. It is not: choosing
// when (the engine).
//
// Errors name the VM and disk. Thread-safety: one thread per domain.

#include <cstdint>
#include <string>

#include "common/error.h"
#include "virt/domain.h"

namespace vmshadow::virt {

struct BlockJobProgress {
    bool running = false;  // a block job exists on the disk
    std::uint64_t cur = 0, end = 0;
    bool in_sync() const { return running && end > 0 && cur == end; }
};

// `bandwidth` in bytes per second caps the copy (0: as fast as it goes).
Status start_block_copy(const Domain& domain, const std::string& target, const std::string& path,
                        const std::string& format, std::uint64_t bandwidth = 0);
Result<BlockJobProgress> block_job_progress(const Domain& domain, const std::string& target);
// Switches the disk to the copy; fails (retryably: conflict) while the copy is not ready yet.
Status pivot_block_copy(const Domain& domain, const std::string& target);
Status abort_block_job(const Domain& domain, const std::string& target);
// Changes a running copy's cap (bytes per second; 0: none).
Status set_block_job_speed(const Domain& domain, const std::string& target,
                           std::uint64_t bandwidth);

}  // namespace vmshadow::virt
