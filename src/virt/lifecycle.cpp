// SPDX-License-Identifier: MIT
#include "virt/lifecycle.h"

#include <libvirt/libvirt.h>

#include <cstdlib>

#include "virt/handles.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {

Status start_domain(const Domain& domain) {
    if (virDomainCreate(domain.raw()) < 0) return fail(libvirt_error(domain.label() + ": start"));
    return {};
}

Status start_domain_paused(const Domain& domain) {
    if (virDomainCreateWithFlags(domain.raw(), VIR_DOMAIN_START_PAUSED) < 0)
        return fail(libvirt_error(domain.label() + ": start paused"));
    return {};
}

Result<Domain> create_transient(const Connection& connection, const std::string& xml) {
    virDomainPtr dom = virDomainCreateXML(connection.raw(), xml.c_str(), 0);
    if (!dom) return fail(libvirt_error("start a throwaway VM"));
    return Domain(DomainHandle(dom));
}

Status destroy_domain(const Domain& domain) {
    int active = virDomainIsActive(domain.raw());
    if (active < 0) return fail(libvirt_error(domain.label() + ": read state"));
    if (active == 0) return {};
    if (virDomainDestroy(domain.raw()) < 0) return fail(libvirt_error(domain.label() + ": stop"));
    return {};
}

Status shutdown_domain(const Domain& domain) {
    int active = virDomainIsActive(domain.raw());
    if (active < 0) return fail(libvirt_error(domain.label() + ": read state"));
    if (active == 0) return {};
    unsigned flags = VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN | VIR_DOMAIN_SHUTDOWN_GUEST_AGENT;
    if (virDomainShutdownFlags(domain.raw(), flags) < 0)
        return fail(libvirt_error(domain.label() + ": shut down"));
    return {};
}

Status suspend_domain(const Domain& domain) {
    int state = 0, reason = 0;
    if (virDomainGetState(domain.raw(), &state, &reason, 0) < 0)
        return fail(libvirt_error(domain.label() + ": read state"));
    if (state == VIR_DOMAIN_PAUSED) return {};
    if (virDomainSuspend(domain.raw()) < 0) return fail(libvirt_error(domain.label() + ": pause"));
    return {};
}

Status resume_domain(const Domain& domain) {
    if (virDomainResume(domain.raw()) < 0) return fail(libvirt_error(domain.label() + ": resume"));
    return {};
}

Result<bool> paused_on_io_error(const Domain& domain) {
    int state = 0, reason = 0;
    if (virDomainGetState(domain.raw(), &state, &reason, 0) < 0)
        return fail(libvirt_error(domain.label() + ": read state"));
    return state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_IOERROR;
}

Status undefine_domain(const Domain& domain) {
    unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                     VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE_KEEP_NVRAM;
    if (virDomainUndefineFlags(domain.raw(), flags) < 0)
        return fail(libvirt_error(domain.label() + ": undefine"));
    return {};
}

Status drop_saved_metadata(const Domain& domain) {
    const std::string label = domain.label();
    int saved = virDomainHasManagedSaveImage(domain.raw(), 0);
    if (saved < 0) return fail(libvirt_error(label + ": read its managed-save state"));
    if (saved > 0 && virDomainManagedSaveRemove(domain.raw(), 0) < 0)
        return fail(libvirt_error(label + ": remove its managed-save image"));
    virDomainCheckpointPtr* checkpoints = nullptr;
    int n = virDomainListAllCheckpoints(domain.raw(), &checkpoints, 0);
    if (n < 0) return fail(libvirt_error(label + ": list checkpoints"));
    bool failed = false;
    for (int i = 0; i < n; ++i) {
        if (!failed && virDomainCheckpointDelete(checkpoints[i],
                                                 VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY) < 0)
            failed = true;
        virDomainCheckpointFree(checkpoints[i]);
    }
    std::free(checkpoints);
    if (failed) return fail(libvirt_error(label + ": remove checkpoint metadata"));
    virDomainSnapshotPtr* snapshots = nullptr;
    n = virDomainListAllSnapshots(domain.raw(), &snapshots, 0);
    if (n < 0) return fail(libvirt_error(label + ": list snapshots"));
    for (int i = 0; i < n; ++i) {
        if (!failed &&
            virDomainSnapshotDelete(snapshots[i], VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY) < 0)
            failed = true;
        virDomainSnapshotFree(snapshots[i]);
    }
    std::free(snapshots);
    if (failed) return fail(libvirt_error(label + ": remove snapshot metadata"));
    return {};
}

Status restore_saved_state(const Connection& connection, const std::filesystem::path& file,
                           const std::optional<std::string>& xml, bool running) {
    unsigned flags = running ? VIR_DOMAIN_SAVE_RUNNING : VIR_DOMAIN_SAVE_PAUSED;
    if (virDomainRestoreFlags(connection.raw(), file.c_str(), xml ? xml->c_str() : nullptr, flags) <
        0) {
        return fail(libvirt_error("restore the saved state in " + file.string()));
    }
    return {};
}

}  // namespace vmshadow::virt
