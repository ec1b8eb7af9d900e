// SPDX-License-Identifier: MIT
// `vmshadow writers [--json]`: the writers of the last backup or restore, with state, last
// error and freeze window, and the exec writers configured now.
// `vmshadow writers test [--event EVENT] [--vm NAME]...`: run the configured exec writers
// through a backup with an empty snapshot set (or one event) and show what they did.
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/app.h"
#include "cli/names.h"
#include "engine/writer_status.h"
#include "vss/event.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct WritersOptions {
    std::string state_file = vss::kDefaultWriterStateFile;
    std::string writers_dir = vss::kDefaultExecWritersDir;
    std::string event;  // test: one event only
    std::vector<std::string> vms;
};

std::string error_text(const vss::WriterStatus& s) {
    if (!s.last_error) return "-";
    const auto& e = *s.last_error;
    std::string text = std::string(vss::event_name(e.event)) + ": " + e.message + " (";
    if (e.code != vss::FailureCode::retryable && e.code != vss::FailureCode::nonretryable) {
        text += std::string(vss::failure_code_name(e.code)) + ", ";
    }
    return text + (e.retryable() ? "retryable)" : "not retryable)");
}

std::string freeze_text(const vss::WriterStatus& s) {
    return s.freeze_window ? std::to_string(s.freeze_window->count()) + " ms" : "-";
}

void print_report(const vss::WriterReport& r, std::string_view title, std::ostream& out) {
    out << title << " " << r.backup_id << ": "
        << (r.succeeded          ? "succeeded"
            : r.finished.empty() ? "did not finish"
                                 : "failed")
        << " (started " << r.started;
    if (!r.finished.empty()) out << ", ended " << r.finished;
    out << ")\n";
    if (r.error) out << "  " << r.error->message() << "\n";
    out << std::left << std::setw(32) << "WRITER" << std::setw(30) << "STATE" << std::setw(10)
        << "FROZEN"
        << "LAST ERROR\n";
    // A writer's name and error come from a config file or a VM name: table_cell and
    // printable keep a newline or a 300-character name from breaking the table.
    for (const auto& s : r.writers) {
        out << table_cell(s.writer_name, 31) << " " << std::setw(30)
            << vss::writer_state_name(s.state) << std::setw(10) << freeze_text(s)
            << printable(error_text(s)) << "\n";
    }
}

json configured_json(const vss::ExecWriterConfig& c) {
    json events = json::array();
    for (vss::Event e : c.events) events.push_back(vss::event_name(e));
    return {{"name", c.name},
            {"writer_id", "exec:" + c.name},
            {"command", c.command},
            {"events", events},
            {"source", c.source.string()}};
}

bool in_report(const std::optional<vss::WriterReport>& last, const std::string& name) {
    if (!last) return false;
    for (const auto& s : last->writers) {
        if (s.writer_id == "exec:" + name) return true;
    }
    return false;
}

Status run_writers(const GlobalOptions& g, const WritersOptions& o) {
    auto listing = engine::list_writer_status({o.state_file, o.writers_dir});
    if (!listing) return fail(listing.error());
    if (g.json) {
        json out{{"state_file", o.state_file},
                 {"last", listing->last ? json(*listing->last) : json(nullptr)},
                 {"configured", json::array()},
                 {"config_error",
                  listing->config_error ? json(listing->config_error->message()) : json(nullptr)}};
        for (const auto& c : listing->configured) out["configured"].push_back(configured_json(c));
        std::cout << out.dump(2) << std::endl;
        return {};
    }
    if (listing->last) {
        print_report(*listing->last,
                     "Last " + std::string(vss::operation_name(listing->last->operation)),
                     std::cout);
    } else {
        std::cout << "No backup has recorded writer states yet (" << o.state_file << ").\n";
    }
    for (const auto& c : listing->configured) {
        if (!in_report(listing->last, c.name)) {
            std::cout << "exec writer '" << c.name << "' (" << c.source.string()
                      << ") has not taken part in a backup yet\n";
        }
    }
    if (listing->config_error) {
        std::cout << "warning: " << listing->config_error->message() << "\n";
    }
    std::cout.flush();
    return {};
}

Status run_writers_test(const GlobalOptions& g, const WritersOptions& o) {
    engine::WriterTestRequest request;
    request.writers_dir = o.writers_dir;
    request.vms = o.vms;
    if (!o.event.empty()) {
        request.event = vss::parse_event(o.event);
        if (!request.event) return fail(ErrorKind::invalid_argument, "unknown event " + o.event);
    }
    auto report = engine::test_exec_writers(request);
    if (!report) return fail(report.error());
    if (g.json) {
        // One JSON document on stdout: on failure, the error object run_cli prints.
        if (!report->error) std::cout << json(*report).dump(2) << std::endl;
    } else {
        print_report(*report, "Test run", std::cout);
        std::cout.flush();
    }
    if (report->error) return fail(*report->error);
    return {};
}

}  // namespace

void add_writers_command(CLI::App& app, GlobalOptions& global, Action& action) {
    auto options = std::make_shared<WritersOptions>();
    auto* writers = app.add_subcommand(
        "writers", "show the writers of the last backup: state, last error, freeze window");
    writers->add_flag("--json", global.json, "JSON output");
    writers
        ->add_option("--state-file", options->state_file,
                     "writer state file (default: " + options->state_file + ")")
        ->envname("VMSHADOW_WRITER_STATE");
    writers
        ->add_option("--writers-dir", options->writers_dir,
                     "exec writer configs (default: " + options->writers_dir + ")")
        ->envname("VMSHADOW_WRITERS_DIR");
    auto* test = writers->add_subcommand(
        "test", "run the configured exec writers through a backup with nothing to copy");
    test->add_flag("--json", global.json, "JSON output");
    test->add_option("--event", options->event,
                     "call this one event only (identify, prepare-backup, freeze, thaw, ...)");
    test->add_option("--vm", options->vms, "VM name passed in VMSHADOW_VMS (repeatable)");
    test->add_option("--writers-dir", options->writers_dir, "exec writer configs")
        ->envname("VMSHADOW_WRITERS_DIR");
    writers->callback([&global, &action, options, test] {
        if (test->parsed()) return;
        action = [&global, options] { return run_writers(global, *options); };
    });
    test->callback([&global, &action, options] {
        action = [&global, options] { return run_writers_test(global, *options); };
    });
}

}  // namespace vmshadow::cli
