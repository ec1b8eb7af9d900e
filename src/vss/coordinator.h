// SPDX-License-Identifier: MIT
#pragma once
// Coordinator: drives one backup through writers and a provider (the VSS service plus the
// requester's IVssBackupComponents). This is the vss module's main header.
//
// This module (src/vss) is: the VSS model with no knowledge of libvirt: Writer and
// Provider interfaces, the event sequence and its time limits, writer states, the
// BackupDocument, exec writers (host applications joining through a config file), and the
// writer state file. It is not: the libvirt VM writer or provider (src/vmwriter/), the
// data copy or the repository (src/engine/, src/repo/).
//
// One Coordinator serves ONE backup; make a new one to retry. The requester (the engine):
//   Coordinator c(writers, provider, options);
//   c.gather_writer_metadata();        // Identify, all writers in parallel
//   c.select_all_components();         // or select_component() each; then, for an
//   c.inherit_backup_stamps(previous); //   incremental, the previous BackupDocument
//   c.prepare_for_backup();            // PrepareForBackup (every writer)
//   auto set = c.do_snapshot_set();    // PrepareForSnapshot → provider prepare → Freeze
//                                      // (all) → provider create → Thaw (all) → PostSnapshot
//   ... copy the data the SnapshotSet points at; c.set_backup_succeeded(key, ok) ...
//   c.backup_complete();               // BackupComplete → provider finish
//   store c.document() on the restore point.
// run_backup() below does exactly this around a copy function.
//
// Failure: any writer's veto or timeout, or a provider failure, fails the whole backup
// (all or nothing). The step returns the error (ErrorKind::cancelled for a veto,
// ErrorKind::timeout for a writer that did not answer in time, the provider's own error
// otherwise) and has ALREADY aborted the backup: Abort went to every writer that got
// PrepareForBackup (in parallel; frozen writers thaw in it) and the provider discarded
// the snapshot set. The failed writer is left in failed-at-<event> with its error and
// whether it is retryable; the others return to stable.
//   Deliberate deviation from VSS (TECH-REFERENCE §1.2): VSS itself sends no Abort for a
//   failure in PrepareForSnapshot or PostSnapshot, but it obliges the requester to call
//   AbortBackup after any failed DoSnapshotSet, which sends Abort anyway. We fold that
//   mandatory requester call into the coordinator, so writers see the same events and no
//   requester can forget it. The same goes for a failure at BackupComplete (VSS only logs
//   it): a backup whose writer failed there is not kept.
// abort(reason) lets the requester abort (copy failed, user interrupt); it is idempotent,
// and the destructor calls it for a backup that was prepared but not finished.
//
// Timeouts: EventTimeouts per event (see event_deadline.h for how a call that overruns is
// abandoned); the provider's create has EventTimeouts::snapshot; a writer frozen longer
// than EventTimeouts::freeze_window fails at Thaw with FailureCode::timeout.
// When the backup ends (completed or aborted) the WriterReport is saved to
// options.state_file, if set.
//
// Thread-safety: not thread-safe: one requester thread drives a Coordinator.

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "vss/backup_document.h"
#include "vss/event.h"
#include "vss/provider.h"
#include "vss/writer.h"
#include "vss/writer_report.h"
#include "vss/writer_roster.h"

namespace vmshadow::vss {

struct CoordinatorOptions {
    std::string backup_id;  // empty: generated from the time ("20261122T010203Z-1a2b")
    BackupType backup_type = BackupType::full;
    std::vector<std::string> vms;  // told to writers (VMSHADOW_VMS for exec writers)
    EventTimeouts timeouts;
    std::optional<std::filesystem::path> state_file;  // where the WriterReport goes
};

class Coordinator {
  public:
    Coordinator(std::vector<std::shared_ptr<Writer>> writers, std::shared_ptr<Provider> provider,
                CoordinatorOptions options);
    ~Coordinator();
    Coordinator(const Coordinator&) = delete;
    Coordinator& operator=(const Coordinator&) = delete;

    // Identify. Fails on a veto or timeout, a writer whose metadata is invalid, or two
    // writers with one id; no Abort is needed then (nothing was prepared).
    Result<std::vector<WriterMetadata>> gather_writer_metadata();
    // After identify, before prepare_for_backup.
    Status select_component(const ComponentKey& key);
    Status select_all_components();
    void inherit_backup_stamps(const BackupDocument& previous);

    Status prepare_for_backup();
    Result<SnapshotSet> do_snapshot_set();
    Status set_backup_succeeded(const ComponentKey& key, bool succeeded);
    // Fails (and aborts) if a component was marked not succeeded; unmarked components
    // count as succeeded.
    Status backup_complete();
    // Returns an error only if cleanup itself failed (a writer's Abort or the provider's).
    Status abort(std::string_view reason);

    const std::string& backup_id() const { return document_.backup_id; }
    bool finished() const { return phase_ == Phase::finished; }
    // The BackupDocument, with results = every writer's status as of now.
    const BackupDocument& document();
    WriterReport report() const;
    // The longest freeze window of any writer in this backup.
    std::optional<std::chrono::milliseconds> longest_freeze_window() const;
    // Why the state file could not be written, if it could not (never fails the backup).
    const std::optional<Error>& state_file_error() const { return state_file_error_; }

  private:
    enum class Phase { created, identified, prepared, snapshot_done, finished };

    EventContext context_for(Event event) const;
    // Sends an event; returns the error of the first failed writer, if any.
    std::optional<Error> send(Event event, const std::vector<std::size_t>& to);
    std::optional<Error> check_freeze_windows(const std::vector<std::size_t>& writers);
    template <typename T>
    Result<T> call_provider(std::string_view what, std::chrono::milliseconds limit,
                            std::function<Result<T>(Provider&, EventDeadline)> body);
    // Aborts and returns `error`.
    std::unexpected<Error> fail_and_abort(Error error);
    Status check_phase(Phase expected, std::string_view step) const;
    void finish(std::optional<Error> error);

    WriterRoster roster_;
    std::shared_ptr<Provider> provider_;
    CoordinatorOptions options_;
    BackupDocument document_;
    Phase phase_ = Phase::created;
    bool provider_prepared_ = false;
    std::vector<std::size_t> participants_;  // writers with selected components
    std::optional<SnapshotSet> snapshot_set_;
    std::string started_;
    std::string finished_at_;
    bool succeeded_ = false;
    std::optional<Error> first_error_;
    std::optional<Error> state_file_error_;
};

// The whole backup around `copy`: identify, select every component (or only those
// `select` accepts), prepare, snapshot, copy, complete. Aborts on any failure. Returns the
// BackupDocument to store with the copied data.
using CopyFunction = std::function<Status(const SnapshotSet&, Coordinator&)>;
using ComponentFilter = std::function<bool(const ComponentKey&)>;
Result<BackupDocument> run_backup(Coordinator& coordinator, const CopyFunction& copy,
                                  const ComponentFilter& select = {});

// "20261122T010203Z-1a2b": sortable, unique enough for one host.
std::string new_backup_id();

}  // namespace vmshadow::vss
