// SPDX-License-Identifier: MIT
#include "vss/restore_coordinator.h"

namespace vmshadow::vss {

RestoreCoordinator::RestoreCoordinator(std::vector<std::shared_ptr<Writer>> writers,
                                       const BackupDocument& saved, RestoreOptions options)
    : roster_(std::move(writers)), saved_(saved), options_(std::move(options)) {
    document_.backup_id = saved_.backup_id;
    document_.operation = Operation::restore;
    document_.backup_type = saved_.backup_type;
    document_.vms = options_.vms.empty() ? saved_.vms : options_.vms;
    document_.writers = saved_.writers;
    started_ = utc_timestamp_now();
}

std::optional<Error> RestoreCoordinator::send(Event event, const std::vector<std::size_t>& to) {
    EventContext base;
    base.event = event;
    base.operation = Operation::restore;
    base.backup_id = document_.backup_id;
    base.backup_type = document_.backup_type;
    base.vms = document_.vms;
    auto failed = roster_.send(to, base, options_.timeouts.for_event(event), document_);
    if (failed.empty()) return std::nullopt;
    const WriterStatus& status = roster_.entries()[failed.front()].status;
    Error error = error_for(status, *status.last_error);
    if (!first_error_) first_error_ = error;
    return error;
}

void RestoreCoordinator::finish(std::optional<Error> error) {
    finished_ = true;
    if (error && !first_error_) first_error_ = error;
    finished_at_ = utc_timestamp_now();
    document_.results = roster_.statuses();
    if (options_.state_file) (void)save_writer_report(*options_.state_file, report());
}

Result<std::vector<WriterMetadata>> RestoreCoordinator::gather_writer_metadata() {
    if (identified_) return fail(ErrorKind::internal, "gather_writer_metadata called twice");
    identified_ = true;
    if (auto error = send(Event::identify, roster_.all())) {
        finish(error);
        return fail(*error);
    }
    std::vector<WriterMetadata> out;
    for (const RosterEntry& entry : roster_.entries()) out.push_back(*entry.metadata);
    return out;
}

Status RestoreCoordinator::select_for_restore(const ComponentKey& key) {
    if (!identified_ || pre_restored_) {
        return fail(ErrorKind::internal, "select_for_restore called out of order");
    }
    const ComponentEntry* saved = saved_.find(key);
    if (!saved) {
        return fail(ErrorKind::not_found,
                    "component " + key.display() + " is not in backup " + saved_.backup_id);
    }
    bool present = false;
    for (const RosterEntry& entry : roster_.entries()) {
        present = present || entry.status.writer_id == key.writer_id;
    }
    if (!present) {
        return fail(ErrorKind::unavailable, "writer '" + key.writer_id + "' needed to restore " +
                                                key.display() + " is not available on this host");
    }
    if (document_.find(key)) return {};
    ComponentEntry entry = *saved;
    entry.file_restore_status = FileRestoreStatus::undefined;
    entry.restore_message.clear();
    document_.components.push_back(std::move(entry));
    return {};
}

Status RestoreCoordinator::select_all_for_restore() {
    for (const ComponentEntry& entry : saved_.components) {
        if (auto selected = select_for_restore(entry.key); !selected) return selected;
    }
    return {};
}

Status RestoreCoordinator::pre_restore() {
    if (!identified_ || pre_restored_ || finished_) {
        return fail(ErrorKind::internal, "pre_restore called out of order");
    }
    pre_restored_ = true;
    if (auto error = send(Event::pre_restore, roster_.with_components(document_))) {
        return fail(*error);
    }
    return {};
}

Status RestoreCoordinator::set_file_restore_status(const ComponentKey& key,
                                                   FileRestoreStatus status) {
    ComponentEntry* entry = document_.find(key);
    if (!entry) return fail(ErrorKind::not_found, "component " + key.display() + " not selected");
    entry->file_restore_status = status;
    return {};
}

Status RestoreCoordinator::post_restore() {
    if (!pre_restored_ || finished_) {
        return fail(ErrorKind::internal, "post_restore called out of order");
    }
    for (ComponentEntry& entry : document_.components) {
        if (entry.file_restore_status == FileRestoreStatus::undefined) {
            entry.file_restore_status = FileRestoreStatus::none;
        }
    }
    std::optional<Error> error = send(Event::post_restore, roster_.prepared());
    finish(error);
    if (first_error_) return fail(*first_error_);
    return {};
}

const BackupDocument& RestoreCoordinator::document() {
    document_.results = roster_.statuses();
    return document_;
}

WriterReport RestoreCoordinator::report() const {
    WriterReport report;
    report.backup_id = document_.backup_id;
    report.operation = Operation::restore;
    report.started = started_;
    report.finished = finished_at_;
    report.succeeded = finished_ && !first_error_;
    report.error = first_error_;
    report.writers = roster_.statuses();
    return report;
}

}  // namespace vmshadow::vss
