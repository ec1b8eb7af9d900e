// SPDX-License-Identifier: MIT
#pragma once
// Event: the VSS events a writer receives, and the per-event time limits.
//
// This module is: the closed list of events (Identify ... PostRestore), their stable names
// (used on the exec-writer command line, in JSON and in the state file: never change them),
// and EventTimeouts, the deadline the coordinator gives each event.
// This module is not: the order in which events are sent (see coordinator.h).
//
// Thread-safety: plain values.

#include <chrono>
#include <optional>
#include <string_view>

namespace vmshadow::vss {

enum class Event {
    identify,
    prepare_backup,
    prepare_snapshot,
    freeze,
    thaw,
    post_snapshot,
    backup_complete,
    abort,
    pre_restore,
    post_restore,
};

inline constexpr Event kAllEvents[] = {
    Event::identify,    Event::prepare_backup, Event::prepare_snapshot, Event::freeze,
    Event::thaw,        Event::post_snapshot,  Event::backup_complete,  Event::abort,
    Event::pre_restore, Event::post_restore,
};

// "identify", "prepare-backup", "prepare-snapshot", "freeze", "thaw", "post-snapshot",
// "backup-complete", "abort", "pre-restore", "post-restore". Never change: scripts use them.
std::string_view event_name(Event event);
std::optional<Event> parse_event(std::string_view name);

// What the coordinator is doing: a backup, a restore, or `vmshadow writers test`.
enum class Operation { backup, restore };
std::string_view operation_name(Operation operation);

// Full: every block is read. Incremental: only what changed since the previous backup,
// whose components' backup stamps the writers see as previous_backup_stamp.
enum class BackupType { full, incremental };
std::string_view backup_type_name(BackupType type);
std::optional<BackupType> parse_backup_type(std::string_view name);

// How long each event may take, per writer. A writer that has not returned by then has
// failed at that event with FailureCode::timeout. Defaults follow VSS where it has one
// (freeze window 60 s; provider commit "no more than 10 s").
struct EventTimeouts {
    std::chrono::milliseconds identify = std::chrono::seconds(60);
    std::chrono::milliseconds prepare_backup = std::chrono::seconds(300);
    std::chrono::milliseconds prepare_snapshot = std::chrono::seconds(300);
    std::chrono::milliseconds freeze = std::chrono::seconds(60);
    std::chrono::milliseconds thaw = std::chrono::seconds(60);
    std::chrono::milliseconds post_snapshot = std::chrono::seconds(300);
    std::chrono::milliseconds backup_complete = std::chrono::seconds(300);
    std::chrono::milliseconds abort = std::chrono::seconds(120);
    std::chrono::milliseconds pre_restore = std::chrono::seconds(600);
    std::chrono::milliseconds post_restore = std::chrono::seconds(600);
    // Provider: creating the snapshot set while every writer is frozen (VSS: 10 s).
    std::chrono::milliseconds snapshot = std::chrono::seconds(10);
    // Longest a writer may stay frozen: from its Freeze returning to its Thaw returning.
    // Longer means the snapshot may not be consistent (Windows guests thaw after 10 s on
    // their own): that writer fails at Thaw with FailureCode::timeout (VSS:
    // VSS_E_WRITERERROR_TIMEOUT) and the backup is aborted.
    std::chrono::milliseconds freeze_window = std::chrono::seconds(60);

    std::chrono::milliseconds for_event(Event event) const;
    // The same limit for every event, snapshot and freeze window (tests, `writers test`).
    static EventTimeouts uniform(std::chrono::milliseconds limit);
};

}  // namespace vmshadow::vss
