// SPDX-License-Identifier: MIT
#include "virt/block_copy.h"

#include <libvirt/libvirt.h>

#include <cstdio>

#include "virt/libvirt_error.h"

namespace vmshadow::virt {

Status start_block_copy(const Domain& domain, const std::string& target, const std::string& path,
                        const std::string& format, std::uint64_t bandwidth) {
    std::string xml =
        "<disk type='file'><source file='" + path + "'/><driver type='" + format + "'/></disk>";
    unsigned flags = VIR_DOMAIN_BLOCK_COPY_REUSE_EXT;
    if (domain.is_persistent()) flags |= VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB;
    virTypedParameter params[1]{};
    int count = 0;
    if (bandwidth > 0) {
        std::snprintf(params[0].field, VIR_TYPED_PARAM_FIELD_LENGTH, "%s",
                      VIR_DOMAIN_BLOCK_COPY_BANDWIDTH);
        params[0].type = VIR_TYPED_PARAM_ULLONG;
        params[0].value.ul = bandwidth;
        count = 1;
    }
    if (virDomainBlockCopy(domain.raw(), target.c_str(), xml.c_str(), params, count, flags) < 0)
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

Status set_block_job_speed(const Domain& domain, const std::string& target,
                           std::uint64_t bandwidth) {
    if (virDomainBlockJobSetSpeed(domain.raw(), target.c_str(), bandwidth,
                                  VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES) < 0)
        return fail(libvirt_error(domain.label() + ", disk " + target + ": set copy speed"));
    return {};
}

}  // namespace vmshadow::virt
