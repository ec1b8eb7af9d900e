// SPDX-License-Identifier: MIT
#pragma once
// Provider: makes the snapshot set, every selected component at one instant (VSS provider).
//
// This module is: the interface the coordinator drives around the writers' freeze, and
// the value types it exchanges. The libvirt pull-backup provider (src/vmwriter/) will
// implement it: create_snapshot_set = virDomainBackupBegin (pull mode, with a checkpoint)
// for every VM of the set while all of them are frozen; finish = end the backup jobs and
// keep the checkpoints; abort = end the jobs, delete the new checkpoints, remove scratch.
// NullProvider (null_provider.h) makes an empty set, for `vmshadow writers test`.
// This module is not: reading the snapshot's data (the engine does that, through what
// ComponentSnapshot says) or freezing anything (writers do).
//
// Call order, per backup: prepare_snapshot_set (after every writer's PrepareForSnapshot,
// before Freeze; do the slow work here, e.g. create scratch images) → create_snapshot_set
// (between the last Freeze and the first Thaw; must be quick: its deadline is
// EventTimeouts::snapshot, 10 s by default, and the guests wait) → finish_snapshot_set
// (after BackupComplete) — or abort_snapshot_set, at any point after prepare, possibly
// after finish, possibly twice, possibly while a timed-out create is still running: it
// must discard whatever this backup id made and be idempotent.
//
// Backup stamps: the request carries every selected component's ComponentEntry, so the
// provider sees the backup_stamp the writer chose (the VM writer's new checkpoint name)
// and previous_backup_stamp (the checkpoint an incremental starts from).
//
// Thread-safety: the coordinator calls one method at a time, except abort (see above).

#include <chrono>
#include <string>
#include <vector>

#include "common/error.h"
#include "vss/backup_document.h"
#include "vss/event.h"
#include "vss/event_deadline.h"
#include "vss/writer_metadata.h"

namespace vmshadow::vss {

struct SnapshotRequest {
    std::string backup_id;  // the snapshot set id
    BackupType backup_type = BackupType::full;
    std::vector<ComponentEntry> components;  // selected, with backup stamps
    std::vector<WriterMetadata> writers;     // what each component's files are
    EventDeadline deadline;
};

// Where the point-in-time copy of one file or disk can be read.
struct SnapshotDevice {
    std::string device;       // disk target (vda) or empty
    std::string source_path;  // the live file it is a snapshot of
    std::string access;       // how to read it, e.g. "nbd+unix:///vda?socket=/run/x.sock"
};

struct ComponentSnapshot {
    ComponentKey component;
    std::vector<SnapshotDevice> devices;
};

struct SnapshotSet {
    std::string id;  // == backup_id
    std::chrono::system_clock::time_point created;
    std::vector<ComponentSnapshot> snapshots;
};

class Provider {
  public:
    virtual ~Provider() = default;

    virtual std::string name() const = 0;

    virtual Status prepare_snapshot_set(const SnapshotRequest&) { return {}; }
    virtual Result<SnapshotSet> create_snapshot_set(const SnapshotRequest& request) = 0;
    virtual Status finish_snapshot_set(const SnapshotSet& set) = 0;
    virtual Status abort_snapshot_set(const std::string& backup_id) = 0;
};

}  // namespace vmshadow::vss
