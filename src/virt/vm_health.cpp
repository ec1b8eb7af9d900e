// SPDX-License-Identifier: MIT
// VM health during a backup (vm_health.h).
#include "virt/vm_health.h"

#include <libvirt/libvirt.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "virt/libvirt_error.h"

namespace vmshadow::virt {

Result<VmHealth> vm_health(const Domain& domain) {
    int state = 0;
    int reason = 0;
    if (virDomainGetState(domain.raw(), &state, &reason, 0) < 0)
        return fail(libvirt_error(domain.label() + ": read state"));
    auto named = domain.state();
    if (!named) return fail(named.error());
    VmHealth health;
    health.state = *named;
    health.io_error_paused = state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_IOERROR;
    if (!health.io_error_paused) return health;
    virDomainDiskError errors[16];
    int n = virDomainGetDiskErrors(domain.raw(), errors, 16, 0);
    for (int i = 0; i < n; ++i) {
        if (!health.io_errors.empty()) health.io_errors += ", ";
        const char* what = errors[i].error == VIR_DOMAIN_DISK_ERROR_NO_SPACE ? "no space"
                           : errors[i].error == VIR_DOMAIN_DISK_ERROR_UNSPEC ? "I/O error"
                                                                             : "error";
        health.io_errors += std::string(errors[i].disk ? errors[i].disk : "?") + ": " + what;
        free(errors[i].disk);
    }
    return health;
}

Status resume_after_io_error(const Domain& domain) {
    if (virDomainResume(domain.raw()) < 0)
        return fail(libvirt_error(domain.label() + ": resume after the I/O error"));
    // A write that fails again (the VM's own storage is full) pauses it again within moments.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    auto health = vm_health(domain);
    if (!health) return fail(health.error());
    if (health->io_error_paused) {
        return fail(ErrorKind::io, domain.label() +
                                       ": QEMU paused the VM again on a write error after it was "
                                       "resumed (" +
                                       (health->io_errors.empty() ? "see `virsh domblkerror`"
                                                                  : health->io_errors) +
                                       "): free space on the VM's own storage, then `virsh "
                                       "resume " +
                                       domain.name() + "`");
    }
    return {};
}

}  // namespace vmshadow::virt
