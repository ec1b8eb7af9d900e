// SPDX-License-Identifier: MIT
#pragma once
// PullBackupProvider: the VSS provider of live VM backups — libvirt pull-mode backup jobs
// (QEMU copy-before-write fleecing) for every VM of a snapshot set.
//
// This module is, per provider call (see vss/provider.h for the contract):
//   prepare_snapshot_set  before any freeze: for each selected VM component, read the VM
//                         writer's plan (backup_plan.h, from backup_metadata) and prepare a
//                         virt::BackupJob (run directory, scratch images, XML), so that only
//                         the begin call is left for the freeze window;
//   create_snapshot_set   inside the window: begin every job (one after another; the
//                         begin call only); each disk becomes a SnapshotDevice whose
//                         access is "nbd+unix:///<export>?socket=<path>" (the export is
//                         named after the disk target, libvirt's default);
//   describe_jobs         after the thaw (the engine calls it; not part of vss::Provider):
//                         read each job's XML, so exports carry their dirty bitmaps;
//   finish_snapshot_set   after the copy: end the jobs, keep the new checkpoints;
//   abort_snapshot_set    end the jobs, delete the checkpoints created with them, remove
//                         scratch — idempotent, and safe after finish.
// Offline VMs (shut off) need no job: their devices are "file:<path>" and the engine reads
// the images directly. job() gives the engine each VM's exports (dirty contexts, sizes) and
// scratch watching. It is not: freezing (vm_writer.h) or reading data (the engine).
//
// Thread-safety: every call takes an internal mutex, so abort waits for a running create.

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "virt/backup_job.h"
#include "virt/domain.h"
#include "vss/provider.h"

namespace vmshadow::vmwriter {

struct PullProviderOptions {
    std::string scratch_dir = "/var/tmp";
    std::string runtime_dir;  // empty: virt::kDefaultBackupRuntimeDir
};

class PullBackupProvider final : public vss::Provider {
  public:
    // `domains`: the VMs of the set, by name (the VM writer's component name).
    PullBackupProvider(std::map<std::string, std::shared_ptr<virt::Domain>> domains,
                       PullProviderOptions options);
    ~PullBackupProvider() override;

    std::string name() const override { return "libvirt pull-mode backup"; }
    Status prepare_snapshot_set(const vss::SnapshotRequest& request) override;
    Result<vss::SnapshotSet> create_snapshot_set(const vss::SnapshotRequest& request) override;
    Status finish_snapshot_set(const vss::SnapshotSet& set) override;
    Status abort_snapshot_set(const std::string& backup_id) override;

    // After the snapshot set was made and the guests thawed: each running job's effective
    // XML (virt::BackupJob::describe), which job()'s exports need for an incremental read.
    Status describe_jobs();
    // The running job of one VM (nullptr for offline VMs or before prepare). The pointer stays
    // valid until abort or destruction; use it only from the thread driving the backup (and
    // poll_scratch from a watcher, as backup_job.h allows).
    virt::BackupJob* job(const std::string& vm);
    // Each running job's scratch limit (0: none).
    void set_scratch_limit(std::uint64_t bytes);

  private:
    std::map<std::string, std::shared_ptr<virt::Domain>> domains_;
    PullProviderOptions options_;
    std::mutex mu_;
    std::map<std::string, std::unique_ptr<virt::BackupJob>> jobs_;
    std::uint64_t scratch_limit_ = 0;
};

}  // namespace vmshadow::vmwriter
