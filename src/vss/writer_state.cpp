// SPDX-License-Identifier: MIT
#include "vss/writer_state.h"

#include <array>
#include <utility>

#include "common/enum_names.h"

namespace vmshadow::vss {
namespace {

constexpr auto kStateNames = enum_names<WriterState>({
    {WriterState::unknown, "unknown"},
    {WriterState::stable, "stable"},
    {WriterState::waiting_for_freeze, "waiting-for-freeze"},
    {WriterState::waiting_for_thaw, "waiting-for-thaw"},
    {WriterState::waiting_for_post_snapshot, "waiting-for-post-snapshot"},
    {WriterState::waiting_for_backup_complete, "waiting-for-backup-complete"},
    {WriterState::failed_at_identify, "failed-at-identify"},
    {WriterState::failed_at_prepare_backup, "failed-at-prepare-backup"},
    {WriterState::failed_at_prepare_snapshot, "failed-at-prepare-snapshot"},
    {WriterState::failed_at_freeze, "failed-at-freeze"},
    {WriterState::failed_at_thaw, "failed-at-thaw"},
    {WriterState::failed_at_post_snapshot, "failed-at-post-snapshot"},
    {WriterState::failed_at_backup_complete, "failed-at-backup-complete"},
    {WriterState::failed_at_pre_restore, "failed-at-pre-restore"},
    {WriterState::failed_at_post_restore, "failed-at-post-restore"},
});

constexpr auto kCodeNames = enum_names<FailureCode>({
    {FailureCode::nonretryable, "nonretryable"},
    {FailureCode::retryable, "retryable"},
    {FailureCode::timeout, "timeout"},
    {FailureCode::inconsistent_snapshot, "inconsistent-snapshot"},
    {FailureCode::out_of_resources, "out-of-resources"},
});

}  // namespace

std::string_view writer_state_name(WriterState state) {
    return kStateNames.name(state);
}
std::optional<WriterState> parse_writer_state(std::string_view name) {
    return kStateNames.parse(name);
}
std::string_view failure_code_name(FailureCode code) {
    return kCodeNames.name(code);
}
std::optional<FailureCode> parse_failure_code(std::string_view name) {
    return kCodeNames.parse(name);
}

bool is_failed(WriterState state) {
    return state >= WriterState::failed_at_identify || state == WriterState::unknown;
}

WriterState failed_state_for(Event event) {
    switch (event) {
        case Event::identify:
            return WriterState::failed_at_identify;
        case Event::prepare_backup:
            return WriterState::failed_at_prepare_backup;
        case Event::prepare_snapshot:
            return WriterState::failed_at_prepare_snapshot;
        case Event::freeze:
            return WriterState::failed_at_freeze;
        case Event::thaw:
            return WriterState::failed_at_thaw;
        case Event::post_snapshot:
            return WriterState::failed_at_post_snapshot;
        case Event::backup_complete:
            return WriterState::failed_at_backup_complete;
        case Event::pre_restore:
            return WriterState::failed_at_pre_restore;
        case Event::post_restore:
            return WriterState::failed_at_post_restore;
        case Event::abort:
            return WriterState::unknown;
    }
    return WriterState::unknown;
}

bool is_retryable(FailureCode code) {
    return code == FailureCode::retryable || code == FailureCode::timeout ||
           code == FailureCode::out_of_resources;
}

Veto veto_retryable(std::string message) {
    return Veto{FailureCode::retryable, std::move(message)};
}

Veto veto_nonretryable(std::string message) {
    return Veto{FailureCode::nonretryable, std::move(message)};
}

Veto veto_from(const Error& error) {
    Veto veto;
    switch (error.kind()) {
        case ErrorKind::unavailable:
        case ErrorKind::locked:
        case ErrorKind::conflict:
            veto = veto_retryable(error.message());
            break;
        case ErrorKind::timeout:
            veto = Veto{FailureCode::timeout, error.message()};
            break;
        default:
            veto = veto_nonretryable(error.message());
            break;
    }
    if (error.kind() != ErrorKind::internal) veto.kind = error.kind();
    return veto;
}

Error error_for(const WriterStatus& writer, const WriterFailure& failure) {
    std::string message = "writer '" + writer.writer_name + "' ";
    message += failure.code == FailureCode::timeout ? "timed out at " : "failed at ";
    message += event_name(failure.event);
    if (!failure.message.empty()) message += ": " + failure.message;
    message += failure.retryable() ? " (retryable)" : " (not retryable)";
    ErrorKind kind =
        failure.code == FailureCode::timeout ? ErrorKind::timeout : ErrorKind::cancelled;
    return Error(failure.kind.value_or(kind), std::move(message));
}

void to_json(nlohmann::json& out, const WriterFailure& failure) {
    out = nlohmann::json{{"event", event_name(failure.event)},
                         {"code", failure_code_name(failure.code)},
                         {"retryable", failure.retryable()},
                         {"message", failure.message}};
}

void to_json(nlohmann::json& out, const WriterStatus& status) {
    out = nlohmann::json{{"writer_id", status.writer_id},
                         {"writer_name", status.writer_name},
                         {"state", writer_state_name(status.state)},
                         {"last_error", nullptr},
                         {"freeze_window_ms", nullptr},
                         {"events", nlohmann::json::array()}};
    if (status.last_error) out["last_error"] = *status.last_error;
    if (status.freeze_window) out["freeze_window_ms"] = status.freeze_window->count();
    for (const EventTiming& timing : status.events) {
        out["events"].push_back({{"event", event_name(timing.event)},
                                 {"duration_ms", timing.duration.count()},
                                 {"ok", timing.ok}});
    }
}

Result<WriterStatus> writer_status_from_json(const nlohmann::json& in) {
    try {
        WriterStatus status;
        status.writer_id = in.at("writer_id").get<std::string>();
        status.writer_name = in.at("writer_name").get<std::string>();
        auto state = parse_writer_state(in.at("state").get<std::string>());
        if (!state)
            return fail(ErrorKind::corruption, "unknown writer state " + in["state"].dump());
        status.state = *state;
        if (in.contains("last_error") && !in["last_error"].is_null()) {
            const auto& e = in["last_error"];
            auto event = parse_event(e.at("event").get<std::string>());
            auto code = parse_failure_code(e.at("code").get<std::string>());
            if (!event || !code) return fail(ErrorKind::corruption, "bad last_error " + e.dump());
            status.last_error = WriterFailure{*event, *code, e.at("message").get<std::string>()};
        }
        if (in.contains("freeze_window_ms") && !in["freeze_window_ms"].is_null()) {
            status.freeze_window =
                std::chrono::milliseconds(in["freeze_window_ms"].get<std::int64_t>());
        }
        for (const auto& t : in.value("events", nlohmann::json::array())) {
            auto event = parse_event(t.at("event").get<std::string>());
            if (!event) return fail(ErrorKind::corruption, "bad event timing " + t.dump());
            status.events.push_back({*event,
                                     std::chrono::milliseconds(t.at("duration_ms").get<int64_t>()),
                                     t.at("ok").get<bool>()});
        }
        return status;
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::corruption, std::string("writer status: ") + e.what());
    }
}

}  // namespace vmshadow::vss
