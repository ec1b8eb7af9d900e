// SPDX-License-Identifier: MIT
// `vmshadow repo check [--read-data]`: verify index, packs, manifests and chunk maps (exit 8 on
// damage).
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/repo_cli.h"
#include "cli/repo_commands.h"
#include "repo/check.h"
#include "repo/lock.h"

namespace vmshadow::cli {

using nlohmann::json;

Status run_check(GlobalOptions& global, bool read_data) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::shared, "repo check");
    if (!lock) return std::unexpected(lock.error());
    repo::CheckOptions options;
    options.read_data = read_data;
    options.task = global.task;
    auto report = repo::check_repository(**repo, options);
    if (!report) return std::unexpected(report.error());
    std::optional<Error> failure;
    if (!report->ok()) {
        std::string msg =
            "repository check found " + std::to_string(report->problems.size()) + " problem(s)";
        if (!report->damaged_points.empty())
            msg += "; damaged restore points: " + std::to_string(report->damaged_points.size()) +
                   " (first: " + report->damaged_points.front() + ")";
        failure = Error(ErrorKind::corruption, msg);
    }
    if (global.json) {
        json out{{"ok", report->ok()},
                 {"index_files", report->index_files},
                 {"packs", report->packs},
                 {"blobs", report->blobs},
                 {"points", report->points},
                 {"read_data", read_data},
                 {"bytes_read", report->bytes_read},
                 {"problems", report->problems},
                 {"damaged_points", report->damaged_points},
                 {"warnings", report->warnings},
                 {"unreferenced",
                  {{"blobs", report->unreferenced_blobs},
                   {"packs", report->unreferenced_packs},
                   {"packs_within_grace", report->unreferenced_young},
                   {"stored_bytes", report->unreferenced_bytes}}}};
        // The report is the one object on stdout; on failure it carries the error too.
        if (failure) {
            out["error"] = failure->message();
            out["kind"] = kind_name(failure->kind());
            global.error_reported = true;
        }
        std::cout << out.dump() << std::endl;
    } else {
        std::cout << "checked " << report->points << " restore points, " << report->packs
                  << " packs, " << report->blobs << " blobs"
                  << (read_data ? " (all data read and verified)" : "") << std::endl;
        for (const auto& w : report->warnings) std::cout << "warning: " << w << std::endl;
        for (const auto& p : report->problems) std::cout << "error: " << p << std::endl;
        for (const auto& p : report->damaged_points)
            std::cout << "damaged restore point: " << p << std::endl;
    }
    if (failure) return fail(*failure);
    if (!global.json)
        std::cout << "no errors were found"
                  << (report->warnings.empty()
                          ? std::string()
                          : " (" + std::to_string(report->warnings.size()) + " warning(s) above)")
                  << std::endl;
    return {};
}

void add_repo_check_command(CLI::App& repo, GlobalOptions& global, Action& action) {
    auto read_data = std::make_shared<bool>(false);
    CLI::App* check = repo.add_subcommand(
        "check",
        "verify index, packs, manifests and chunk maps; exit 8 on any damage (unreferenced "
        "data is a warning)");
    check->add_flag("--read-data", *read_data, "also read every chunk and verify its hash");
    check->callback([&global, &action, read_data] {
        action = [&global, read_data] { return run_check(global, *read_data); };
    });
}

}  // namespace vmshadow::cli
