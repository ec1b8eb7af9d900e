// SPDX-License-Identifier: MIT
#pragma once
// Writer: an application that owns data and takes part in backups (VSS CVssWriter).
//
// This module is: the interface every writer implements, and EventContext, what a writer
// is told at each event. Implementations: the libvirt VM writer (src/vmwriter/: one per
// VM; agent freeze in freeze(), thaw in thaw() and abort()), exec writers (exec_writer.h),
// and fakes in tests. Every implementation must pass the conformance suite in
// tests/unit/vss/writer_conformance.h.
// This module is not: the order of events (coordinator.h) or the snapshot (provider.h).
//
// The contract, per event (the coordinator calls them in this order; see docs/VSS.md):
//   identify          describe yourself: WriterMetadata (id, name, components, files).
//   prepare_backup    preflight: check what the backup will need; set backup stamps.
//   prepare_snapshot  do long preparation now (saving a VM's state belongs here), so that
//                     freeze is short.
//   freeze            make your data consistent on disk and hold writes. Be quick: the
//                     freeze window (Freeze returning → Thaw returning) is measured and
//                     limited. The provider creates the snapshot set while ALL writers are
//                     frozen.
//   thaw              release what freeze held.
//   post_snapshot     the snapshot set exists; fix-ups (resume a saved VM) go here.
//   backup_complete   the data has been copied; keep whatever the next incremental needs.
//   abort             the backup failed: undo everything since prepare_backup (thaw if
//                     frozen, resume if saved, drop a half-made checkpoint). Sent to every
//                     writer that got prepare_backup, in ANY state, possibly more than once
//                     and possibly while a timed-out call of the same writer still runs:
//                     it must be idempotent and thread-safe against that call. Its result
//                     is recorded, never a veto.
//   pre_restore       before files are written back (the VM writer stops and undefines).
//   post_restore      after: read each component's file_restore_status; anything but
//                     `all` should veto (the VM writer defines the VM again).
// A writer says no by returning a Veto (retryable or not); any veto fails the whole backup
// and the coordinator sends Abort. Writers must not throw (a thrown exception is caught
// and recorded as a non-retryable veto). Writers receive events only for operations they
// take part in: after prepare_backup / pre_restore only writers with a selected component.
//
// Thread-safety: the coordinator calls one writer's events one after another, except
// abort() (see above). Different writers are called concurrently, each on its own thread.

#include <expected>
#include <string>
#include <vector>

#include "vss/backup_document.h"
#include "vss/event.h"
#include "vss/event_deadline.h"
#include "vss/writer_metadata.h"
#include "vss/writer_state.h"

namespace vmshadow::vss {

using WriterResult = std::expected<void, Veto>;

struct EventContext {
    Event event = Event::identify;
    Operation operation = Operation::backup;
    std::string backup_id;  // also the snapshot set id
    BackupType backup_type = BackupType::full;
    std::vector<std::string> vms;  // the VMs this backup covers (informational)
    // This writer's selected components (empty for identify and for writers without any).
    // Writers may set backup_stamp, backup_metadata and restore_message; the coordinator
    // copies them into the BackupDocument when the call returns in time.
    std::vector<ComponentEntry> components;
    EventDeadline deadline;
};

class Writer {
  public:
    virtual ~Writer() = default;

    // Stable identity; must equal WriterMetadata::writer_id from identify().
    virtual std::string id() const = 0;
    virtual std::string name() const = 0;

    virtual std::expected<WriterMetadata, Veto> identify(EventContext& context) = 0;
    virtual WriterResult prepare_backup(EventContext&) { return {}; }
    virtual WriterResult prepare_snapshot(EventContext&) { return {}; }
    virtual WriterResult freeze(EventContext&) { return {}; }
    virtual WriterResult thaw(EventContext&) { return {}; }
    virtual WriterResult post_snapshot(EventContext&) { return {}; }
    virtual WriterResult backup_complete(EventContext&) { return {}; }
    virtual WriterResult abort(EventContext&) { return {}; }
    virtual WriterResult pre_restore(EventContext&) { return {}; }
    virtual WriterResult post_restore(EventContext&) { return {}; }
};

// Calls the member of `writer` for context.event (not identify: use Writer::identify).
WriterResult deliver(Writer& writer, EventContext& context);

}  // namespace vmshadow::vss
