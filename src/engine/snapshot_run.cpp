// SPDX-License-Identifier: MIT
#include "engine/snapshot_run.h"

#include <sys/statvfs.h>

#include <chrono>

#include "common/byte_size.h"
#include "virt/vm_health.h"

namespace vmshadow::engine {

using std::chrono::milliseconds;

std::uint64_t default_scratch_limit(const std::string& dir) {
    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) != 0) return 0;
    return static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize / 10 * 9;
}

bool parse_nbd_access(const std::string& access, std::string& export_name, std::string& socket) {
    const std::string prefix = "nbd+unix:///";
    if (access.rfind(prefix, 0) != 0) return false;
    auto q = access.find("?socket=");
    if (q == std::string::npos) return false;
    export_name = access.substr(prefix.size(), q - prefix.size());
    socket = access.substr(q + 8);
    return true;
}

std::shared_ptr<vmwriter::PullBackupProvider> make_pull_provider(
    const std::vector<std::shared_ptr<virt::Domain>>& domains, const std::string& scratch_dir,
    const std::string& runtime_dir, std::uint64_t max_scratch) {
    std::map<std::string, std::shared_ptr<virt::Domain>> by_name;
    for (const auto& d : domains) by_name[d->name()] = d;
    vmwriter::PullProviderOptions po;
    po.scratch_dir = scratch_dir;
    po.runtime_dir = runtime_dir;
    auto provider = std::make_shared<vmwriter::PullBackupProvider>(std::move(by_name), po);
    provider->set_scratch_limit(max_scratch ? max_scratch : default_scratch_limit(scratch_dir));
    return provider;
}

std::vector<bool> io_paused_now(const std::vector<std::shared_ptr<virt::Domain>>& domains) {
    std::vector<bool> paused;
    for (const auto& d : domains) {
        auto h = virt::vm_health(*d);
        paused.push_back(h && h->io_error_paused);
    }
    return paused;
}

Error resume_io_paused(const Error& error,
                       const std::vector<std::shared_ptr<virt::Domain>>& domains,
                       const std::vector<bool>& paused_before, const std::string& scratch_dir) {
    std::string message = error.message();
    ErrorKind kind = error.kind();
    for (std::size_t i = 0; i < domains.size(); ++i) {
        auto h = virt::vm_health(*domains[i]);
        if (!h || !h->io_error_paused || (i < paused_before.size() && paused_before[i])) continue;
        if (message.find("paused the VM on a write error") == std::string::npos) {
            // The error seen (a thaw that timed out, say) is a symptom: name the cause first.
            message =
                domains[i]->label() + ": QEMU paused the VM on a write error during the backup (" +
                (h->io_errors.empty() ? std::string("see `virsh domblkerror`") : h->io_errors) +
                "): most likely the scratch directory's filesystem (" + scratch_dir +
                ") filled; the backup was aborted (" + message + ")";
            kind = ErrorKind::io;
        }
        auto resumed = virt::resume_after_io_error(*domains[i]);
        message += resumed ? "; " + domains[i]->label() + " was resumed"
                           : "; " + resumed.error().message();
    }
    return Error(kind, std::move(message));
}

ScratchWatch::ScratchWatch(vmwriter::PullBackupProvider& provider,
                           std::vector<std::shared_ptr<virt::Domain>> domains,
                           std::string scratch_dir)
    : thread_([this, &provider, domains = std::move(domains),
               scratch_dir = std::move(scratch_dir)](std::stop_token stop) {
          // io-error paused at the start, or shut off (an offline backup): not watched.
          std::map<std::string, bool> paused_before;
          for (const auto& d : domains) {
              auto h = virt::vm_health(*d);
              paused_before[d->name()] = h && (h->io_error_paused || h->stopped());
          }
          while (!stop.stop_requested()) {
              for (const auto& d : domains) {
                  check_scratch(provider, d->name());
                  if (!paused_before[d->name()]) check_vm(*d, scratch_dir);
              }
              std::this_thread::sleep_for(milliseconds(100));
          }
      }) {}

Status ScratchWatch::failure() const {
    std::lock_guard lock(mu_);
    if (error_) return std::unexpected(*error_);
    return {};
}

void ScratchWatch::set_error(Error e) {
    std::lock_guard lock(mu_);
    if (!error_) error_ = std::move(e);
}

void ScratchWatch::check_scratch(vmwriter::PullBackupProvider& provider, const std::string& vm) {
    virt::BackupJob* job = provider.job(vm);
    if (!job || !job->running()) return;
    auto status = job->poll_scratch();
    if (!status || !status->crossed) return;
    set_error(Error(ErrorKind::unavailable,
                    "vm '" + vm + "': the guest wrote " + format_bytes(status->used) +
                        " into the backup's scratch space, over its limit of " +
                        format_bytes(status->limit) +
                        ": the backup was aborted before the guest could see a write error; "
                        "raise --max-scratch (or free space in the scratch directory) or "
                        "back up when the VM writes less"));
}

void ScratchWatch::check_vm(const virt::Domain& domain, const std::string& scratch_dir) {
    auto health = virt::vm_health(domain);
    if (!health) return;
    if (health->io_error_paused) {
        set_error(Error(ErrorKind::io,
                        domain.label() +
                            ": QEMU paused the VM on a write error during the backup (" +
                            (health->io_errors.empty() ? std::string("see `virsh domblkerror`")
                                                       : health->io_errors) +
                            "): most likely the scratch directory's filesystem (" + scratch_dir +
                            ") filled, so a copy-before-write failed; the backup was aborted"));
    } else if (health->stopped()) {
        set_error(Error(ErrorKind::unavailable, domain.label() +
                                                    " stopped during the backup (it is " +
                                                    std::string(virt::state_name(health->state)) +
                                                    " now): the backup was aborted"));
    }
}

}  // namespace vmshadow::engine
