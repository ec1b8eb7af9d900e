// SPDX-License-Identifier: MIT
#include "vss/coordinator.h"

#include <ctime>
#include <exception>
#include <random>
#include <set>

#include "common/time_format.h"
#include "vss/deadline_call.h"
#include "vss/null_provider.h"

namespace vmshadow::vss {
namespace {

using std::chrono::milliseconds;

std::string ms_text(milliseconds ms) {
    return std::to_string(ms.count()) + " ms";
}

}  // namespace

std::string new_backup_id() {
    std::string stamp =
        compact_utc(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())) + "Z";
    std::random_device random;
    char suffix[8];
    std::snprintf(suffix, sizeof suffix, "%04x", static_cast<unsigned>(random() & 0xffff));
    return stamp + "-" + suffix;
}

Coordinator::Coordinator(std::vector<std::shared_ptr<Writer>> writers,
                         std::shared_ptr<Provider> provider, CoordinatorOptions options)
    : roster_(std::move(writers)), provider_(std::move(provider)), options_(std::move(options)) {
    if (!provider_) provider_ = std::make_shared<NullProvider>();
    document_.backup_id = options_.backup_id.empty() ? new_backup_id() : options_.backup_id;
    document_.operation = Operation::backup;
    document_.backup_type = options_.backup_type;
    document_.vms = options_.vms;
    started_ = utc_timestamp_now();
}

Coordinator::~Coordinator() {
    if (phase_ != Phase::created && phase_ != Phase::finished) {
        (void)abort("the backup was abandoned before it completed");
    }
}

EventContext Coordinator::context_for(Event event) const {
    EventContext context;
    context.event = event;
    context.operation = Operation::backup;
    context.backup_id = document_.backup_id;
    context.backup_type = document_.backup_type;
    context.vms = document_.vms;
    return context;
}

Status Coordinator::check_phase(Phase expected, std::string_view step) const {
    if (phase_ == expected) return {};
    if (phase_ == Phase::finished) {
        return fail(ErrorKind::internal,
                    std::string(step) + ": backup " + document_.backup_id + " has already ended");
    }
    return fail(ErrorKind::internal, std::string(step) + " called out of order");
}

std::optional<Error> Coordinator::send(Event event, const std::vector<std::size_t>& to) {
    auto failed =
        roster_.send(to, context_for(event), options_.timeouts.for_event(event), document_);
    if (failed.empty()) return std::nullopt;
    const WriterStatus& status = roster_.entries()[failed.front()].status;
    Error error = error_for(status, *status.last_error);
    if (failed.size() > 1) {
        error = Error(error.kind(), error.message() + " (and " + std::to_string(failed.size() - 1) +
                                        " more writer(s) failed at " +
                                        std::string(event_name(event)) + ")");
    }
    return error;
}

std::optional<Error> Coordinator::check_freeze_windows(const std::vector<std::size_t>& writers) {
    std::optional<Error> first;
    const milliseconds limit = options_.timeouts.freeze_window;
    for (std::size_t index : writers) {
        const WriterStatus& status = roster_.entries()[index].status;
        if (!status.freeze_window || *status.freeze_window <= limit) continue;
        roster_.record_failure(index,
                               {Event::thaw, FailureCode::timeout,
                                "stayed frozen for " + ms_text(*status.freeze_window) +
                                    ", longer than the freeze window limit of " + ms_text(limit)});
        if (!first) first = error_for(status, *status.last_error);
    }
    return first;
}

template <typename T>
Result<T> Coordinator::call_provider(std::string_view what, milliseconds limit,
                                     std::function<Result<T>(Provider&, EventDeadline)> body) {
    std::stop_source stop;
    EventDeadline deadline(EventDeadline::clock::now() + limit, stop.get_token());
    const std::string who = "provider '" + provider_->name() + "'";
    auto call = DeadlineCall<Result<T>>::start(
        [provider = provider_, body = std::move(body), deadline]() -> Result<T> {
            try {
                return body(*provider, deadline);
            } catch (const std::exception& e) {
                return fail(ErrorKind::internal, std::string("provider threw: ") + e.what());
            }
        },
        std::move(stop), Result<T>(fail(ErrorKind::unavailable, "cannot start a thread")));
    std::optional<Result<T>> result = call.wait_until(deadline.at());
    if (!result) {
        return fail(ErrorKind::timeout,
                    who + " did not " + std::string(what) + " within " + ms_text(limit));
    }
    if (!*result) return fail(result->error().with_context(who));
    return std::move(*result);
}

std::unexpected<Error> Coordinator::fail_and_abort(Error error) {
    if (!first_error_) first_error_ = error;
    (void)abort(error.message());
    return fail(std::move(error));
}

void Coordinator::finish(std::optional<Error> error) {
    phase_ = Phase::finished;
    if (error && !first_error_) first_error_ = error;
    finished_at_ = utc_timestamp_now();
    document_.results = roster_.statuses();
    if (options_.state_file) {
        if (auto saved = save_writer_report(*options_.state_file, report()); !saved) {
            state_file_error_ = saved.error();
        }
    }
}

Result<std::vector<WriterMetadata>> Coordinator::gather_writer_metadata() {
    if (auto ok = check_phase(Phase::created, "gather_writer_metadata"); !ok) {
        return fail(ok.error());
    }
    phase_ = Phase::identified;
    if (auto error = send(Event::identify, roster_.all())) {
        finish(error);
        return fail(*error);
    }
    std::set<std::string> ids;
    for (std::size_t i = 0; i < roster_.entries().size(); ++i) {
        RosterEntry& entry = roster_.entries()[i];
        const WriterMetadata& metadata = *entry.metadata;
        std::optional<std::string> problem;
        if (metadata.writer_id != entry.status.writer_id) {
            problem = "its metadata names writer id '" + metadata.writer_id + "'";
        } else if (auto valid = validate(metadata); !valid) {
            problem = valid.error().message();
        } else if (!ids.insert(metadata.writer_id).second) {
            problem = "another writer has the same id";
        }
        if (problem) {
            roster_.record_failure(i, {Event::identify, FailureCode::nonretryable, *problem});
            Error error = error_for(entry.status, *entry.status.last_error);
            finish(error);
            return fail(error);
        }
        document_.writers.push_back(metadata);
    }
    return document_.writers;
}

Status Coordinator::select_component(const ComponentKey& key) {
    if (auto ok = check_phase(Phase::identified, "select_component"); !ok) return ok;
    const WriterMetadata* writer = document_.writer(key.writer_id);
    const Component* component = writer ? writer->find(key) : nullptr;
    if (!component) {
        return fail(ErrorKind::not_found, "no component " + key.display() + " in this backup");
    }
    if (!component->selectable_for_backup) {
        return fail(ErrorKind::invalid_argument,
                    "component " + key.display() + " cannot be selected for backup");
    }
    if (!document_.find(key)) {
        ComponentEntry entry;
        entry.key = key;
        document_.components.push_back(std::move(entry));
    }
    return {};
}

Status Coordinator::select_all_components() {
    std::vector<ComponentKey> keys;
    for (const WriterMetadata& writer : document_.writers) {
        for (const Component& component : writer.components) {
            if (component.selectable_for_backup) keys.push_back(writer.key_of(component));
        }
    }
    for (const ComponentKey& key : keys) {
        if (auto selected = select_component(key); !selected) return selected;
    }
    return {};
}

void Coordinator::inherit_backup_stamps(const BackupDocument& previous) {
    document_.inherit_backup_stamps(previous);
}

Status Coordinator::prepare_for_backup() {
    if (auto ok = check_phase(Phase::identified, "prepare_for_backup"); !ok) return ok;
    phase_ = Phase::prepared;
    participants_ = roster_.with_components(document_);
    // VSS: PrepareForBackup goes to every writer, with or without selected components.
    if (auto error = send(Event::prepare_backup, roster_.all())) return fail_and_abort(*error);
    return {};
}

Result<SnapshotSet> Coordinator::do_snapshot_set() {
    if (auto ok = check_phase(Phase::prepared, "do_snapshot_set"); !ok) return fail(ok.error());
    auto request = [this] {
        SnapshotRequest r;
        r.backup_id = document_.backup_id;
        r.backup_type = document_.backup_type;
        r.components = document_.components;
        r.writers = document_.writers;
        return r;
    };
    if (auto error = send(Event::prepare_snapshot, participants_)) return fail_and_abort(*error);

    provider_prepared_ = true;
    auto prepared =
        call_provider<void>("prepare the snapshot set", options_.timeouts.prepare_snapshot,
                            [r = request()](Provider& p, EventDeadline deadline) mutable {
                                r.deadline = deadline;
                                return p.prepare_snapshot_set(r);
                            });
    if (!prepared) return fail_and_abort(prepared.error());

    if (auto error = send(Event::freeze, participants_)) return fail_and_abort(*error);
    auto set =
        call_provider<SnapshotSet>("create the snapshot set", options_.timeouts.snapshot,
                                   [r = request()](Provider& p, EventDeadline deadline) mutable {
                                       r.deadline = deadline;
                                       return p.create_snapshot_set(r);
                                   });
    // Thaw whether or not the snapshot worked; on failure Abort would thaw too, but a
    // failed snapshot must not keep guests frozen a moment longer than needed.
    std::optional<Error> thaw_error = send(Event::thaw, participants_);
    if (!set) return fail_and_abort(set.error().with_context("creating the snapshot set"));
    if (thaw_error) return fail_and_abort(*thaw_error);
    if (auto error = check_freeze_windows(participants_)) return fail_and_abort(*error);
    if (auto error = send(Event::post_snapshot, participants_)) return fail_and_abort(*error);
    snapshot_set_ = *set;
    phase_ = Phase::snapshot_done;
    return std::move(*set);
}

Status Coordinator::set_backup_succeeded(const ComponentKey& key, bool succeeded) {
    ComponentEntry* entry = document_.find(key);
    if (!entry) return fail(ErrorKind::not_found, "component " + key.display() + " not selected");
    entry->backup_succeeded = succeeded;
    return {};
}

Status Coordinator::backup_complete() {
    if (auto ok = check_phase(Phase::snapshot_done, "backup_complete"); !ok) return ok;
    for (ComponentEntry& entry : document_.components) {
        if (entry.backup_succeeded == false) {
            return fail_and_abort(
                Error(ErrorKind::cancelled, "component " + entry.key.display() +
                                                " was not backed up, and partial backups are not "
                                                "kept"));
        }
        entry.backup_succeeded = true;
    }
    if (auto error = send(Event::backup_complete, participants_)) return fail_and_abort(*error);
    auto finished = call_provider<void>(
        "finish the snapshot set", options_.timeouts.backup_complete,
        [set = *snapshot_set_](Provider& p, EventDeadline) { return p.finish_snapshot_set(set); });
    if (!finished) return fail_and_abort(finished.error());
    succeeded_ = true;
    finish(std::nullopt);
    return {};
}

Status Coordinator::abort(std::string_view reason) {
    if (phase_ == Phase::finished) return {};
    if (!first_error_) {
        first_error_ = Error(ErrorKind::cancelled, "backup aborted: " + std::string(reason));
    }
    // Mark finished first: a failure inside Abort must not start another Abort.
    phase_ = Phase::finished;
    std::optional<Error> cleanup;
    if (auto to = roster_.prepared(); !to.empty()) {
        if (auto error = send(Event::abort, to)) cleanup = *error;
    }
    if (provider_prepared_) {
        auto discarded =
            call_provider<void>("discard the snapshot set", options_.timeouts.abort,
                                [id = document_.backup_id](Provider& p, EventDeadline) {
                                    return p.abort_snapshot_set(id);
                                });
        if (!discarded && !cleanup) cleanup = discarded.error();
    }
    finish(std::nullopt);
    if (cleanup) return fail(cleanup->with_context("cleaning up after the failed backup"));
    return {};
}

const BackupDocument& Coordinator::document() {
    document_.results = roster_.statuses();
    return document_;
}

WriterReport Coordinator::report() const {
    WriterReport report;
    report.backup_id = document_.backup_id;
    report.operation = Operation::backup;
    report.started = started_;
    report.finished = finished_at_;
    report.succeeded = succeeded_;
    report.error = first_error_;
    report.writers = roster_.statuses();
    return report;
}

std::optional<milliseconds> Coordinator::longest_freeze_window() const {
    std::optional<milliseconds> longest;
    for (const RosterEntry& entry : roster_.entries()) {
        if (entry.status.freeze_window && (!longest || *entry.status.freeze_window > *longest)) {
            longest = entry.status.freeze_window;
        }
    }
    return longest;
}

Result<BackupDocument> run_backup(Coordinator& coordinator, const CopyFunction& copy,
                                  const ComponentFilter& select) {
    auto metadata = coordinator.gather_writer_metadata();
    if (!metadata) return fail(metadata.error());
    Status selected = {};
    if (select) {
        for (const WriterMetadata& writer : *metadata) {
            for (const Component& component : writer.components) {
                ComponentKey key = writer.key_of(component);
                if (select(key) && selected) selected = coordinator.select_component(key);
            }
        }
    } else {
        selected = coordinator.select_all_components();
    }
    if (!selected) {
        (void)coordinator.abort(selected.error().message());
        return fail(selected.error());
    }
    if (auto prepared = coordinator.prepare_for_backup(); !prepared) return fail(prepared.error());
    auto set = coordinator.do_snapshot_set();
    if (!set) return fail(set.error());
    if (copy) {
        if (auto copied = copy(*set, coordinator); !copied) {
            (void)coordinator.abort(copied.error().message());
            return fail(copied.error());
        }
    }
    if (auto completed = coordinator.backup_complete(); !completed) return fail(completed.error());
    return coordinator.document();
}

}  // namespace vmshadow::vss
