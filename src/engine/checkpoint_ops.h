// SPDX-License-Identifier: MIT
#pragma once
// Checkpoint operations (Hyper-V checkpoints on libvirt 9.0): create, apply, delete, rename,
// over the record of checkpoint_tree.h. Each holds the VM's lock (vm_lock.h) for its whole
// run, so a backup, a replica cycle or another checkpoint operation of the VM never
// interleaves, and each leaves the VM as it found it (running, paused or off) unless the
// operation is to change that (apply). On any failure before the record is saved nothing the
// user sees changes: new overlays are removed, a frozen guest is thawed (FreezeGuard), a
// paused VM resumed.
//
//   create   production: freeze through the guest agent (FreezeGuard, with the thaw
//            guardian), external disk-only snapshot without libvirt metadata
//            (VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | NO_METADATA | ATOMIC) onto new overlays,
//            thaw. When the agent cannot freeze: fails with the reason, or with
//            fallback_standard makes a standard checkpoint and says why in `note`.
//            standard: the same snapshot with the memory saved (external memory, LIVE), so
//            applying it resumes the VM where it was. A shut-off VM: overlays made with
//            qemu-img, domain redefined (production only; its disks are consistent already).
//   apply    the VM goes off (destroy; its state is discarded — the CLI says so and asks
//            first), each disk goes onto a fresh overlay above the checkpoint's images
//            (domain XML redefined), `current` moves there; standard: the memory file is
//            restored with the new disk XML (virDomainRestoreFlags + dxml) and the VM runs
//            on; production: the VM stays off unless `start`. The old "now" overlays are
//            deleted (they belong to no checkpoint). Tracking is reset (tree.tracking_reset_*).
//   delete   the checkpoint's layer is merged into what depends on it while the VM runs:
//            one dependent image → block commit of the dependant into the layer (active
//            commit + pivot when it is the running overlay), the dependant's record then
//            names the layer; several → every dependant but the one the running VM has open
//            pulls the layer's data (`qemu-img rebase`), then the last is committed as above
//            (checkpoint_merge_plan.h). A shut-off VM: the same with qemu-img, its "now"
//            overlay pulled rather than committed. No other checkpoint's content changes.
//            `subtree`: its descendants first, leaves first. A standard checkpoint's memory
//            file goes with it.
//   rename   the record only.
//
// Thread-safety: one operation per VM at a time (the VM lock; a second fails with conflict).

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "engine/checkpoint_tree.h"

namespace vmshadow::virt {
class Connection;
class Domain;
}  // namespace vmshadow::virt

namespace vmshadow::engine {

struct CheckpointCreateOptions {
    std::string vm;
    std::string name;  // empty: "<vm> - (<local time>)"
    CheckpointType type = CheckpointType::production;
    bool fallback_standard = false;
    int freeze_timeout_seconds = 60;
};
Result<Checkpoint> create_checkpoint(virt::Connection& connection,
                                     const CheckpointCreateOptions& options, TaskContext& task);

struct CheckpointApplyOptions {
    std::string vm;
    std::string checkpoint;  // name or id
    bool start = false;      // production: start the VM afterwards
};
struct CheckpointApplyOutcome {
    Checkpoint applied;
    bool running = false;                // the VM runs after the apply
    std::vector<std::string> discarded;  // the overlay images of the state it left
};
Result<CheckpointApplyOutcome> apply_checkpoint(virt::Connection& connection,
                                                const CheckpointApplyOptions& options,
                                                TaskContext& task);

struct CheckpointDeleteOptions {
    std::string vm;
    std::string checkpoint;  // name or id
    bool subtree = false;
};
struct CheckpointDeleteOutcome {
    std::vector<std::string> deleted;  // names, in the order they went
    std::vector<std::string> merges;   // one line per merge made ("vda: committed … into …")
};
Result<CheckpointDeleteOutcome> delete_checkpoint(virt::Connection& connection,
                                                  const CheckpointDeleteOptions& options,
                                                  TaskContext& task);

Status rename_checkpoint(virt::Connection& connection, const std::string& vm,
                         const std::string& checkpoint, const std::string& new_name);

// A shadow copy of the VM (shadow_ops.h) holds its one libvirt backup job: create and delete
// would fail on libvirt's own message, and apply would end the shadow with the VM. So each
// refuses first (create, apply and delete call this under the VM's lock; the CLI before it
// asks to apply): conflict naming the shadow and how to delete it. A VM that does not run
// has no shadow.
Status refuse_if_shadowed(const virt::Domain& domain, const std::string& operation);

// The VM's tree (an empty tree when it has none); not_found when the VM does not exist.
Result<CheckpointTree> list_checkpoints(virt::Connection& connection, const std::string& vm);

}  // namespace vmshadow::engine
