// SPDX-License-Identifier: MIT
#pragma once
// VM health during a backup: whether QEMU paused the VM on a disk write error (and which), or
// it stopped; and resuming it once the cause is gone. The backup engine polls it while it
// copies (docs/ARCHITECTURE.md, "Paused by QEMU during a backup").
//
// It is: reading the domain's state and disk errors, and one resume. It is not: deciding
// whether a backup goes on (the engine), or ending the backup job (backup_job.h).
//
// Thread-safety: plain functions; safe from a watcher thread beside the copy (libvirt
// connections are thread-safe).

#include <string>

#include "common/error.h"
#include "virt/domain.h"

namespace vmshadow::virt {

// The VM as a backup must watch it: QEMU pauses a VM whose disk write failed (werror
// "stop"/"enospc", libvirt's default for ENOSPC) — a copy-before-write into a scratch
// filesystem that filled, even for a moment, fails the guest's write and pauses it; nothing
// resumes it by itself. A VM that stops during the copy ends its backup job too.
struct VmHealth {
    DomainState state = DomainState::running;
    bool io_error_paused = false;  // paused, reason VIR_DOMAIN_PAUSED_IOERROR
    std::string io_errors;         // virDomainGetDiskErrors: "vdb: no space", or empty
    bool stopped() const {
        return state == DomainState::shutoff || state == DomainState::crashed ||
               state == DomainState::shutdown;
    }
};
Result<VmHealth> vm_health(const Domain& domain);

// Resumes a VM an I/O error paused, once the caller removed the cause (ended the backup job
// and its scratch); fails, naming the disk errors, when QEMU pauses it again at once (the
// VM's own storage is full).
Status resume_after_io_error(const Domain& domain);

}  // namespace vmshadow::virt
