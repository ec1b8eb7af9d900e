// SPDX-License-Identifier: MIT
#pragma once
// WriterState: where a writer is in a backup or restore, and how it failed.
//
// This module is: the VSS writer states (VSS_WRITER_STATE: stable, waiting for freeze /
// thaw / post-snapshot / backup-complete, failed at a named event, unknown), the failure
// codes a writer can veto with (VSS_E_WRITERERROR_*), `Veto` (what a writer returns to say
// no) and `WriterStatus` (what the coordinator records per writer: state, last error,
// freeze window, how long each event took). Stored in the BackupDocument and in the state
// file, so the names are stable: never change them.
// This module is not: the rules that move a writer between states (coordinator.cpp).
//
// Thread-safety: plain values.

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "vss/event.h"

namespace vmshadow::vss {

enum class WriterState {
    unknown,  // VSS_WS_UNKNOWN: the writer errored where no state fits (its Abort failed)
    stable,   // idle, or finished the current operation
    waiting_for_freeze,
    waiting_for_thaw,
    waiting_for_post_snapshot,
    waiting_for_backup_complete,
    failed_at_identify,
    failed_at_prepare_backup,
    failed_at_prepare_snapshot,
    failed_at_freeze,
    failed_at_thaw,
    failed_at_post_snapshot,
    failed_at_backup_complete,
    failed_at_pre_restore,
    failed_at_post_restore,
};

// "stable", "waiting-for-freeze", ..., "failed-at-freeze", ...
std::string_view writer_state_name(WriterState state);
std::optional<WriterState> parse_writer_state(std::string_view name);
bool is_failed(WriterState state);
// The failed-at state for a failure at `event` (Abort has none: unknown).
WriterState failed_state_for(Event event);

// Why a writer said no (VSS_E_WRITERERROR_*).
enum class FailureCode {
    nonretryable,           // would recur if the backup were retried: do not retry blindly
    retryable,              // would likely not recur: retry the whole backup
    timeout,                // did not answer in time (or stayed frozen too long): retryable
    inconsistent_snapshot,  // the snapshot set lacks something a component needs
    out_of_resources,       // ran out of memory, disk, ...: retryable
};
std::string_view failure_code_name(FailureCode code);
std::optional<FailureCode> parse_failure_code(std::string_view name);
bool is_retryable(FailureCode code);

// What a writer returns from an event to veto it. Every veto fails the whole backup (a
// backup of several VMs is all or nothing).
struct Veto {
    FailureCode code = FailureCode::nonretryable;
    std::string message;
    // What went wrong, when a lower layer said (an agent that did not answer is `unavailable`,
    // exit 4, not a plain veto); nullopt: the writer said no (`cancelled`, or `timeout`).
    std::optional<ErrorKind> kind = std::nullopt;
};
Veto veto_retryable(std::string message);
Veto veto_nonretryable(std::string message);
// Classifies an Error from a lower layer: unavailable, timeout, locked and conflict are
// retryable (a service did not answer, a job was in the way); the rest are not. The error's
// kind is kept (but `internal`, which from a writer means an unexpected refusal, not our bug).
Veto veto_from(const Error& error);

// A writer's failure as recorded by the coordinator.
struct WriterFailure {
    Event event = Event::identify;
    FailureCode code = FailureCode::nonretryable;
    std::string message;
    std::optional<ErrorKind> kind = std::nullopt;  // Veto::kind; not persisted
    bool retryable() const { return is_retryable(code); }
};

// How long one event took for one writer.
struct EventTiming {
    Event event = Event::identify;
    std::chrono::milliseconds duration{0};
    bool ok = true;
};

struct WriterStatus {
    std::string writer_id;
    std::string writer_name;
    WriterState state = WriterState::stable;
    std::optional<WriterFailure> last_error;
    // From this writer's Freeze returning to its Thaw returning; set once thawed.
    std::optional<std::chrono::milliseconds> freeze_window;
    std::vector<EventTiming> events;
};

// The error a failed backup or restore returns for this failure: ErrorKind::timeout for
// FailureCode::timeout, ErrorKind::cancelled for a veto.
Error error_for(const WriterStatus& writer, const WriterFailure& failure);

void to_json(nlohmann::json& out, const WriterFailure& failure);
void to_json(nlohmann::json& out, const WriterStatus& status);
Result<WriterStatus> writer_status_from_json(const nlohmann::json& in);

}  // namespace vmshadow::vss
