// SPDX-License-Identifier: MIT
#include "vss/event.h"

namespace vmshadow::vss {

std::string_view event_name(Event event) {
    switch (event) {
        case Event::identify:
            return "identify";
        case Event::prepare_backup:
            return "prepare-backup";
        case Event::prepare_snapshot:
            return "prepare-snapshot";
        case Event::freeze:
            return "freeze";
        case Event::thaw:
            return "thaw";
        case Event::post_snapshot:
            return "post-snapshot";
        case Event::backup_complete:
            return "backup-complete";
        case Event::abort:
            return "abort";
        case Event::pre_restore:
            return "pre-restore";
        case Event::post_restore:
            return "post-restore";
    }
    return "unknown";
}

std::optional<Event> parse_event(std::string_view name) {
    for (Event event : kAllEvents) {
        if (event_name(event) == name) return event;
    }
    return std::nullopt;
}

std::string_view operation_name(Operation operation) {
    return operation == Operation::backup ? "backup" : "restore";
}

std::string_view backup_type_name(BackupType type) {
    return type == BackupType::full ? "full" : "incremental";
}

std::optional<BackupType> parse_backup_type(std::string_view name) {
    if (name == "full") return BackupType::full;
    if (name == "incremental") return BackupType::incremental;
    return std::nullopt;
}

std::chrono::milliseconds EventTimeouts::for_event(Event event) const {
    switch (event) {
        case Event::identify:
            return identify;
        case Event::prepare_backup:
            return prepare_backup;
        case Event::prepare_snapshot:
            return prepare_snapshot;
        case Event::freeze:
            return freeze;
        case Event::thaw:
            return thaw;
        case Event::post_snapshot:
            return post_snapshot;
        case Event::backup_complete:
            return backup_complete;
        case Event::abort:
            return abort;
        case Event::pre_restore:
            return pre_restore;
        case Event::post_restore:
            return post_restore;
    }
    return identify;
}

EventTimeouts EventTimeouts::uniform(std::chrono::milliseconds limit) {
    EventTimeouts t;
    for (auto* field : {&t.identify, &t.prepare_backup, &t.prepare_snapshot, &t.freeze, &t.thaw,
                        &t.post_snapshot, &t.backup_complete, &t.abort, &t.pre_restore,
                        &t.post_restore, &t.snapshot, &t.freeze_window}) {
        *field = limit;
    }
    return t;
}

}  // namespace vmshadow::vss
