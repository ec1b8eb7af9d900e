// SPDX-License-Identifier: MIT
#include "virt/block_copy.h"

#include <libvirt/libvirt.h>

#include "virt/libvirt_error.h"

namespace vmshadow::virt {

Status start_block_copy(const Domain& domain, const std::string& target, const std::string& path,
                        const std::string& format) {
    std::string xml =
        "<disk type='file'><source file='" + path + "'/><driver type='" + format + "'/></disk>";
    unsigned flags = VIR_DOMAIN_BLOCK_COPY_REUSE_EXT;
    if (domain.is_persistent()) flags |= VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB;
    if (virDomainBlockCopy(domain.raw(), target.c_str(), xml.c_str(), nullptr, 0, flags) < 0)
        return fail(libvirt_error(domain.label() + ", disk " + target + ": start copy to " + path));
    return {};
}

Result<BlockJobProgress> block_job_progress(const Domain& domain, const std::string& target) {
    virDomainBlockJobInfo info{};
    int r = virDomainGetBlockJobInfo(domain.raw(), target.c_str(), &info, 0);
    if (r < 0) return fail(libvirt_error(domain.label() + ", disk " + target + ": copy progress"));
    BlockJobProgress p;
    p.running = r == 1;
    p.cur = info.cur;
    p.end = info.end;
    return p;
}

Status pivot_block_copy(const Domain& domain, const std::string& target) {
    if (virDomainBlockJobAbort(domain.raw(), target.c_str(), VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) <
        0) {
        Error e = libvirt_error(domain.label() + ", disk " + target + ": switch to the copy");
        return fail(ErrorKind::conflict, e.message());
    }
    return {};
}

Status abort_block_job(const Domain& domain, const std::string& target) {
    if (virDomainBlockJobAbort(domain.raw(), target.c_str(), 0) < 0)
        return fail(libvirt_error(domain.label() + ", disk " + target + ": abort copy"));
    return {};
}

}  // namespace vmshadow::virt
