// SPDX-License-Identifier: MIT
#pragma once
// VM changes: a change-tracked read of one VM's disks for a consumer other than a repository
// — Replica's cycles (src/replica/). The same VSS flow as a VM backup (vm_backup.h: the VM
// writer, the pull-mode provider, libvirt checkpoints and dirty bitmaps), with its own
// checkpoint chain and a ChangeSink instead of a repository.
//
// This module is:
//   - a chain: checkpoints named with the chain id in place of a repository id
//     (virt::make_checkpoint_name(chain_id, ...): "vmshadow-<chain8>-<time>"), so a replica's
//     chain and each repository's chain live side by side on one VM and never retire each
//     other's checkpoints;
//   - a running VM: a pull-mode backup job, incremental from the chain's last checkpoint
//     (whose XML the caller keeps from the previous read and passes back; the VM writer heals
//     a missing libvirt checkpoint from it, or falls back to a full read and says why per
//     disk, never a wrong incremental), all disks from one instant; crash-consistent (no
//     freeze) unless `application_consistent` (the guest agent's freeze, as the `application`
//     method: when the agent cannot freeze, the read is crash-consistent and says why);
//   - a shut-off VM (planned failover's last cycle): the chain's bitmaps since its last
//     checkpoint, merged into a temporary bitmap in each qcow2 (qemu-img bitmap --merge) and
//     exported by qemu-nbd (-B), removed afterwards; a full read when they are not usable;
//     no new checkpoint is made for a shut-off VM (outcome.checkpoint stays the previous one);
//   - delivery: ChangeSink::begin (disks, sizes, full/incremental per disk with the reason),
//     then each disk's changed extents in offset order, data read with several requests in
//     flight, zero extents as zero(); then ChangeSink::commit; only after commit succeeded
//     the writers get BackupComplete and the chain's older checkpoints are deleted; a failure
//     or cancel anywhere before aborts (guest thawed, job ended, the new checkpoint deleted,
//     scratch removed) and the chain's previous checkpoint stays usable.
// It holds the per-VM lock (vm_lock.h) for the whole read: a backup of the same VM running
// now makes it fail with ErrorKind::conflict at once, touching nothing (the daemon queues).
// It is not: where the extents go (the sink), scheduling, or the replica's protocol.
//
// Thread-safety: one read per VM at a time (the VM lock); the sink is called from the
// calling thread only.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "virt/connection.h"
#include "virt/freeze_guard.h"

namespace vmshadow::engine {

struct ChangeDisk {
    std::string target;        // "vda"
    std::uint64_t size = 0;    // the export's size in bytes
    bool incremental = false;  // false: every byte is delivered (data or zero)
    std::string full_reason;   // why a full read when the chain had a checkpoint
};

struct ChangeSet {
    std::string vm;
    std::string uuid;
    std::string consistency;          // "application" | "crash"
    std::optional<std::string> base;  // the checkpoint the changes start from
    std::string checkpoint;           // the checkpoint these changes end at
    std::string time;                 // ISO 8601 UTC of the instant read
    std::vector<ChangeDisk> disks;
    std::string domain_xml;  // inactive domain XML (secure fields excluded)
};

class ChangeSink {
  public:
    virtual ~ChangeSink() = default;
    virtual Status begin(const ChangeSet& set) = 0;
    // `disk` indexes ChangeSet::disks; extents of one disk arrive in ascending offset order,
    // disks one after another. The span is valid only during the call.
    virtual Status data(std::size_t disk, std::uint64_t offset,
                        std::span<const std::byte> bytes) = 0;
    virtual Status zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) = 0;
    // Every extent was delivered: make them durable on the other side. An error aborts the
    // read like any failure.
    virtual Status commit() = 0;
};

struct ChangeReadOptions {
    std::string vm;
    std::string chain_id;                 // ≥ 8 lower-hex characters
    std::string previous_checkpoint_xml;  // the chain's last checkpoint (outcome of the last
                                          // read); empty: a full read
    bool force_full = false;              // read everything even when the chain is usable
    bool application_consistent = false;
    std::vector<std::string> exclude_disks;
    std::string scratch_dir = "/var/tmp";
    std::uint64_t max_scratch = 0;  // 0: 90% of the scratch dir's free space
    std::string runtime_dir;
    virt::FreezeSettings freeze;
    TaskContext* task = nullptr;
};

struct ChangeReadOutcome {
    ChangeSet set;                   // as given to the sink
    std::string checkpoint_xml;      // the new checkpoint's full XML: pass back next time
    std::vector<std::string> notes;  // "agent unavailable: crash-consistent", ...
    std::uint64_t bytes_read = 0;    // data bytes delivered
    std::optional<std::int64_t> freeze_ms;
    double seconds = 0;
};

Result<ChangeReadOutcome> read_vm_changes(const virt::Connection& connection,
                                          const ChangeReadOptions& options, ChangeSink& sink);

// Deletes every checkpoint of the chain `chain_id` on the VM (replica removed or resync):
// other chains' and foreign checkpoints are left alone.
Status delete_chain(const virt::Connection& connection, const std::string& vm,
                    const std::string& chain_id);

}  // namespace vmshadow::engine
