// SPDX-License-Identifier: MIT
#include "vss/event.h"

#include "common/enum_names.h"

namespace vmshadow::vss {

namespace {

constexpr auto kEventNames = enum_names<Event>({
    {Event::identify, "identify"},
    {Event::prepare_backup, "prepare-backup"},
    {Event::prepare_snapshot, "prepare-snapshot"},
    {Event::freeze, "freeze"},
    {Event::thaw, "thaw"},
    {Event::post_snapshot, "post-snapshot"},
    {Event::backup_complete, "backup-complete"},
    {Event::abort, "abort"},
    {Event::pre_restore, "pre-restore"},
    {Event::post_restore, "post-restore"},
});
constexpr auto kOperationNames =
    enum_names<Operation>({{Operation::backup, "backup"}, {Operation::restore, "restore"}});
constexpr auto kBackupTypeNames =
    enum_names<BackupType>({{BackupType::full, "full"}, {BackupType::incremental, "incremental"}});

}  // namespace

std::string_view event_name(Event event) {
    return kEventNames.name(event);
}

std::optional<Event> parse_event(std::string_view name) {
    return kEventNames.parse(name);
}

std::string_view operation_name(Operation operation) {
    return kOperationNames.name(operation);
}

std::string_view backup_type_name(BackupType type) {
    return kBackupTypeNames.name(type);
}

std::optional<BackupType> parse_backup_type(std::string_view name) {
    return kBackupTypeNames.parse(name);
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
