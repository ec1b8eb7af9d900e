// SPDX-License-Identifier: MIT
#pragma once
// WriterRoster: the writers taking part in one backup or restore, their statuses, and how
// an event is sent to them.
//
// This module is: send(), which delivers one event to a set of writers IN PARALLEL (each
// on its own thread, see deadline_call.h), waits for all of them up to one shared
// deadline, and records per writer: how long the call took, the new state (waiting for
// the next event, or failed at this one with its Veto / a timeout), the freeze window,
// and the component fields a writer may change (backup stamp, backup metadata, restore
// message) back into the BackupDocument. Used by Coordinator and RestoreCoordinator.
// This module is not: the order of events or what a failure means for the backup.
//
// Thread-safety: not thread-safe; owned by one coordinator.

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "vss/backup_document.h"
#include "vss/writer.h"

namespace vmshadow::vss {

struct RosterEntry {
    std::shared_ptr<Writer> writer;
    WriterStatus status;
    std::optional<WriterMetadata> metadata;  // after identify
    bool got_prepare = false;                // got prepare_backup / pre_restore
    std::optional<std::chrono::steady_clock::time_point> frozen_at;  // freeze returned
};

class WriterRoster {
  public:
    explicit WriterRoster(std::vector<std::shared_ptr<Writer>> writers);

    std::vector<RosterEntry>& entries() { return entries_; }
    const std::vector<RosterEntry>& entries() const { return entries_; }
    std::vector<WriterStatus> statuses() const;

    // Indices of every writer / of writers with a selected component in `document`.
    std::vector<std::size_t> all() const;
    std::vector<std::size_t> with_components(const BackupDocument& document) const;
    // Indices of writers that got prepare_backup / pre_restore.
    std::vector<std::size_t> prepared() const;

    // Sends `base.event` to the writers at `to`, in parallel, each with `limit`. Returns
    // the indices of writers that failed (vetoed, threw, or timed out), in roster order.
    std::vector<std::size_t> send(const std::vector<std::size_t>& to, const EventContext& base,
                                  std::chrono::milliseconds limit, BackupDocument& document);

    // Marks writer `index` failed (state failed-at-<event>, or unknown for abort).
    void record_failure(std::size_t index, WriterFailure failure);

  private:
    std::vector<RosterEntry> entries_;
};

}  // namespace vmshadow::vss
