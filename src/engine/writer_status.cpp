// SPDX-License-Identifier: MIT
#include "engine/writer_status.h"

#include "vss/coordinator.h"
#include "vss/exec_writer.h"
#include "vss/null_provider.h"
#include "vss/writer_roster.h"

namespace vmshadow::engine {
namespace {

// One event to every writer, outside any backup.
vss::WriterReport run_one_event(std::vector<std::shared_ptr<vss::Writer>> writers, vss::Event event,
                                const WriterTestRequest& request) {
    vss::WriterReport report;
    report.backup_id = "test-" + vss::new_backup_id();
    report.started = vss::utc_timestamp_now();
    vss::WriterRoster roster(std::move(writers));
    vss::BackupDocument document;
    document.backup_id = report.backup_id;
    vss::EventContext base;
    base.event = event;
    base.operation = event == vss::Event::pre_restore || event == vss::Event::post_restore
                         ? vss::Operation::restore
                         : vss::Operation::backup;
    base.backup_id = report.backup_id;
    base.vms = request.vms;
    auto failed = roster.send(roster.all(), base, vss::EventTimeouts{}.for_event(event), document);
    report.finished = vss::utc_timestamp_now();
    report.writers = roster.statuses();
    report.succeeded = failed.empty();
    if (!failed.empty()) {
        const vss::WriterStatus& status = roster.entries()[failed.front()].status;
        report.error = vss::error_for(status, *status.last_error);
    }
    return report;
}

}  // namespace

Result<WriterStatusListing> list_writer_status(const WriterStatusRequest& request) {
    WriterStatusListing listing;
    auto last = vss::load_writer_report(request.state_file);
    if (!last) return fail(last.error().with_context("writer state"));
    listing.last = std::move(*last);
    auto configured = vss::load_exec_writer_configs(request.writers_dir);
    if (configured) {
        listing.configured = std::move(*configured);
    } else {
        listing.config_error = configured.error();
    }
    return listing;
}

Result<vss::WriterReport> test_exec_writers(const WriterTestRequest& request) {
    auto writers = vss::load_exec_writers(request.writers_dir);
    if (!writers) return fail(writers.error());
    if (writers->empty()) {
        return fail(ErrorKind::not_found,
                    "no exec writers configured in " + request.writers_dir.string());
    }
    if (request.event) return run_one_event(std::move(*writers), *request.event, request);
    vss::CoordinatorOptions options;
    options.backup_id = "test-" + vss::new_backup_id();
    options.vms = request.vms;
    vss::Coordinator coordinator(std::move(*writers), std::make_shared<vss::NullProvider>(),
                                 options);
    (void)vss::run_backup(coordinator, {});
    return coordinator.report();
}

}  // namespace vmshadow::engine
