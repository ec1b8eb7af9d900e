// SPDX-License-Identifier: MIT
#include "vss/writer_roster.h"

#include <exception>

#include "vss/deadline_call.h"

namespace vmshadow::vss {
namespace {

using clock = std::chrono::steady_clock;

// What one writer's call produced, built on the worker thread.
struct CallResult {
    std::optional<Veto> veto;
    EventContext context;
    std::optional<WriterMetadata> metadata;
    clock::time_point returned;
};

CallResult call_writer(Writer& writer, EventContext context) {
    CallResult result;
    try {
        if (context.event == Event::identify) {
            auto metadata = writer.identify(context);
            if (metadata) {
                result.metadata = std::move(*metadata);
            } else {
                result.veto = std::move(metadata.error());
            }
        } else if (auto outcome = deliver(writer, context); !outcome) {
            result.veto = std::move(outcome.error());
        }
    } catch (const std::exception& e) {
        result.veto = veto_nonretryable(std::string("writer threw: ") + e.what());
    } catch (...) {
        result.veto = veto_nonretryable("writer threw an unknown exception");
    }
    result.context = std::move(context);
    result.returned = clock::now();
    return result;
}

// The state a writer is in after handling `event` successfully. A failed writer stays
// failed for the rest of the operation (Abort, or PostRestore after a failed PreRestore).
WriterState state_after(Event event, WriterState before) {
    if (is_failed(before)) return before;
    switch (event) {
        case Event::prepare_snapshot:
            return WriterState::waiting_for_freeze;
        case Event::freeze:
            return WriterState::waiting_for_thaw;
        case Event::thaw:
            return WriterState::waiting_for_post_snapshot;
        case Event::post_snapshot:
            return WriterState::waiting_for_backup_complete;
        case Event::abort:
            return is_failed(before) ? before : WriterState::stable;
        default:
            return WriterState::stable;
    }
}

// Copies what a writer may change (VSS: stamp, metadata, failure message) into `document`.
void merge_components(const std::string& writer_id, const std::vector<ComponentEntry>& from,
                      BackupDocument& document) {
    for (const ComponentEntry& changed : from) {
        if (changed.key.writer_id != writer_id) continue;
        if (ComponentEntry* entry = document.find(changed.key)) {
            entry->backup_stamp = changed.backup_stamp;
            entry->backup_metadata = changed.backup_metadata;
            entry->restore_message = changed.restore_message;
        }
    }
}

std::vector<ComponentEntry> components_of(const std::string& writer_id,
                                          const BackupDocument& document) {
    std::vector<ComponentEntry> out;
    for (const ComponentEntry& entry : document.components) {
        if (entry.key.writer_id == writer_id) out.push_back(entry);
    }
    return out;
}

}  // namespace

WriterRoster::WriterRoster(std::vector<std::shared_ptr<Writer>> writers) {
    for (auto& writer : writers) {
        RosterEntry entry;
        entry.status.writer_id = writer->id();
        entry.status.writer_name = writer->name();
        entry.writer = std::move(writer);
        entries_.push_back(std::move(entry));
    }
}

std::vector<WriterStatus> WriterRoster::statuses() const {
    std::vector<WriterStatus> out;
    for (const RosterEntry& entry : entries_) out.push_back(entry.status);
    return out;
}

std::vector<std::size_t> WriterRoster::all() const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < entries_.size(); ++i) out.push_back(i);
    return out;
}

std::vector<std::size_t> WriterRoster::with_components(const BackupDocument& document) const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
        if (!components_of(entries_[i].status.writer_id, document).empty()) out.push_back(i);
    }
    return out;
}

std::vector<std::size_t> WriterRoster::prepared() const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
        if (entries_[i].got_prepare) out.push_back(i);
    }
    return out;
}

void WriterRoster::record_failure(std::size_t index, WriterFailure failure) {
    WriterStatus& status = entries_[index].status;
    status.state = failed_state_for(failure.event);
    status.last_error = std::move(failure);
}

std::vector<std::size_t> WriterRoster::send(const std::vector<std::size_t>& to,
                                            const EventContext& base,
                                            std::chrono::milliseconds limit,
                                            BackupDocument& document) {
    const Event event = base.event;
    const auto started = clock::now();
    const auto deadline = started + limit;
    std::vector<DeadlineCall<CallResult>> calls;
    calls.reserve(to.size());
    for (std::size_t index : to) {
        RosterEntry& entry = entries_[index];
        if (event == Event::prepare_backup || event == Event::pre_restore) entry.got_prepare = true;
        std::stop_source stop;
        EventContext context = base;
        context.components = components_of(entry.status.writer_id, document);
        context.deadline = EventDeadline(deadline, stop.get_token());
        CallResult fallback{veto_retryable("cannot start a thread"), base, std::nullopt, started};
        calls.push_back(DeadlineCall<CallResult>::start(
            [writer = entry.writer, context = std::move(context)]() mutable {
                return call_writer(*writer, std::move(context));
            },
            std::move(stop), std::move(fallback)));
    }

    std::vector<std::size_t> failed;
    for (std::size_t n = 0; n < to.size(); ++n) {
        RosterEntry& entry = entries_[to[n]];
        std::optional<CallResult> result = calls[n].wait_until(deadline);
        auto returned = result ? result->returned : clock::now();
        entry.status.events.push_back(
            {event, std::chrono::duration_cast<std::chrono::milliseconds>(returned - started),
             result && !result->veto});
        if (!result) {
            record_failure(to[n], {event, FailureCode::timeout,
                                   "no answer within " + std::to_string(limit.count()) + " ms"});
            failed.push_back(to[n]);
            continue;
        }
        if (result->veto) {
            record_failure(to[n], {event, result->veto->code, std::move(result->veto->message),
                                   result->veto->kind});
            failed.push_back(to[n]);
            continue;
        }
        merge_components(entry.status.writer_id, result->context.components, document);
        if (result->metadata) entry.metadata = std::move(result->metadata);
        entry.status.state = state_after(event, entry.status.state);
        if (event == Event::freeze) entry.frozen_at = returned;
        if (event == Event::thaw && entry.frozen_at) {
            entry.status.freeze_window =
                std::chrono::duration_cast<std::chrono::milliseconds>(returned - *entry.frozen_at);
        }
    }
    return failed;
}

}  // namespace vmshadow::vss
