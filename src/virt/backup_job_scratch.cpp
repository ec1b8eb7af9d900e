// SPDX-License-Identifier: MIT
// BackupJob's scratch accounting (backup_job.h, "Scratch watching"): the space its scratch
// files take, the job's temp-space statistics, and the per-disk threshold.
#include <libvirt/libvirt.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "common/os_error.h"
#include "virt/backup_job.h"
#include "virt/backup_job_detail.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {

Result<std::uint64_t> BackupJob::scratch_used() const {
    std::uint64_t used = 0;
    for (const auto& e : exports_) {
        struct stat st {};
        if (::stat(e.scratch.c_str(), &st) != 0) {
            return fail(
                os_error("vm '" + domain_name_ + "': scratch image " + e.scratch.string(), errno));
        }
        used += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
    return used;
}

Status BackupJob::set_scratch_threshold(std::string_view target, std::uint64_t bytes) {
    const BackupExport* e = find_export(target);
    std::string label =
        "vm '" + domain_name_ + "': scratch threshold of disk " + std::string(target);
    if (!e || state_ != State::running || e->index < 0) {
        return fail(ErrorKind::invalid_argument, label + ": no running export of that disk");
    }
    if (virDomainSetBlockThreshold(domain_.get(), e->threshold_name().c_str(), bytes, 0) < 0) {
        return fail(libvirt_error(label));
    }
    return {};
}

Result<ScratchStatus> BackupJob::poll_scratch() {
    ScratchStatus status;
    auto used = scratch_used();
    if (!used) return fail(used.error());
    status.used = *used;
    if (state_ == State::running) {
        auto stats = job_stats(domain_.get(), 0, "vm '" + domain_name_ + "'");
        if (!stats) return fail(stats.error());
        status.copied = stats->temp_used;
        status.total = stats->temp_total;
    }
    status.limit = limit_;
    if (limit_ > 0 && status.used >= limit_) crossed_ = true;
    status.crossed = crossed_;
    return status;
}

}  // namespace vmshadow::virt
