// SPDX-License-Identifier: MIT
#pragma once
// Snapshot run: the pieces a live read of VM disks shares, whether it ends in a repository
// (vm_backup.cpp) or in a ChangeSink (vm_changes.cpp) — engine-internal, named by no public
// engine header.
//
// This module is:
//   - the pull-mode provider for a set of VMs, with its scratch limit (default: 90 % of the
//     scratch directory's free space);
//   - parsing the provider's NBD access string;
//   - ScratchWatch: the thread that polls each job's scratch use and each VM's state while
//     the disks are read (polling, not events: virt/backup_job.h says why); a VM QEMU paused
//     on a write error, or that stopped, fails the read;
//   - after an abort ended the jobs (the cause), resuming a VM that QEMU paused on a write
//     error during the read, and saying so in the error.
// It is not: the VSS sequence (the callers drive vss::Coordinator), nor the copy.
//
// Thread-safety: ScratchWatch's failure() may be called from any thread; the rest is used
// by the thread driving the read.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "virt/domain.h"
#include "vmwriter/pull_backup_provider.h"

namespace vmshadow::engine {

// 90 % of the free space of `dir` (0 when it cannot be inspected).
std::uint64_t default_scratch_limit(const std::string& dir);

// Parses "nbd+unix:///<export>?socket=<path>" (the provider's SnapshotDevice::access).
bool parse_nbd_access(const std::string& access, std::string& export_name, std::string& socket);

// The provider of one snapshot set over `domains` (by name); `max_scratch` 0: the default.
std::shared_ptr<vmwriter::PullBackupProvider> make_pull_provider(
    const std::vector<std::shared_ptr<virt::Domain>>& domains, const std::string& scratch_dir,
    const std::string& runtime_dir, std::uint64_t max_scratch);

// Whether each VM is paused by QEMU on an I/O error now (taken before the snapshot).
std::vector<bool> io_paused_now(const std::vector<std::shared_ptr<virt::Domain>>& domains);

// After the abort ended the jobs (and their scratch, the cause): resumes every VM an I/O
// error paused during this read (not those in `paused_before`), and says so in the error.
Error resume_io_paused(const Error& error,
                       const std::vector<std::shared_ptr<virt::Domain>>& domains,
                       const std::vector<bool>& paused_before, const std::string& scratch_dir);

// Polls every live job's scratch, and every VM's state, while the disks are read; the reader
// checks failure() between pieces. A VM that QEMU paused on a write error (a scratch
// filesystem that filled, even for a moment), or that stopped, fails the read: a point taken
// then is not what the user asked for, and the paused VM must be resumed once the backup job
// (its cause) is gone.
class ScratchWatch {
  public:
    ScratchWatch(vmwriter::PullBackupProvider& provider,
                 std::vector<std::shared_ptr<virt::Domain>> domains, std::string scratch_dir);
    Status failure() const;

  private:
    void set_error(Error e);
    void check_scratch(vmwriter::PullBackupProvider& provider, const std::string& vm);
    void check_vm(const virt::Domain& domain, const std::string& scratch_dir);

    mutable std::mutex mu_;
    std::optional<Error> error_;
    std::jthread thread_;  // last: stopped and joined before the members above go
};

}  // namespace vmshadow::engine
