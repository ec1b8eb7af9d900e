// SPDX-License-Identifier: MIT
// `vmshadow repo repair index [--read-data]` and `repo repair records`: rebuild what can be rebuilt
// from the data itself.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/repo_cli.h"
#include "cli/repo_commands.h"
#include "repo/format.h"
#include "repo/lock.h"
#include "repo/repair.h"

namespace vmshadow::cli {

using nlohmann::json;

Status run_repair_index(GlobalOptions& global, bool read_data) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    repo::RepairIndexOptions options;
    options.read_data = read_data;
    options.task = global.task;
    auto report = repo::repair_index(**repo, options);
    if (!report) return std::unexpected(report.error());
    std::optional<Error> error;
    if (!report->ok()) {
        std::string what;
        if (!report->skipped.empty())
            what = "left out " + std::to_string(report->skipped.size()) + " damaged pack(s)";
        if (!report->missing_packs.empty())
            what += (what.empty() ? "" : " and ") + std::string("found ") +
                    std::to_string(report->missing_packs.size()) + " pack(s) missing";
        error = Error(ErrorKind::corruption,
                      "repair index " + what +
                          "; restore points that need them stay damaged (see `vmshadow repo "
                          "check`)");
    }
    if (global.json) {
        json skipped = json::array();
        for (const auto& s : report->skipped) skipped.push_back({{"path", s.path}, {"why", s.why}});
        json out{{"ok", report->ok()},
                 {"packs_indexed", report->packs_indexed},
                 {"blobs", report->blobs},
                 {"read_data", read_data},
                 {"bytes_read", report->bytes_read},
                 {"packs_skipped", skipped},
                 {"packs_missing", report->missing_packs},
                 {"new_index", report->new_index ? json(report->new_index->hex()) : json(nullptr)},
                 {"index_files_replaced", report->index_files_replaced},
                 {"damaged_index_files", report->damaged_index_files}};
        if (error) {
            out["error"] = error->message();
            out["kind"] = kind_name(error->kind());
            global.error_reported = true;
        }
        std::cout << out.dump() << std::endl;
    } else {
        std::cout << "indexed " << report->packs_indexed << " packs, " << report->blobs << " blobs"
                  << (read_data ? " (all data read and verified against pack names)" : "");
        if (report->new_index) std::cout << ", into index file " << report->new_index->hex();
        std::cout << std::endl;
        for (const auto& d : report->damaged_index_files)
            std::cout << "damaged: " << d << std::endl;
        std::cout << "replaced " << report->index_files_replaced.size() << " index file(s)"
                  << std::endl;
        for (const auto& s : report->skipped)
            std::cout << "skipped pack " << s.path << ": " << s.why << std::endl;
        for (const auto& m : report->missing_packs)
            std::cout << "missing pack " << m << ": an old index named it; its chunks are lost"
                      << std::endl;
        if (!report->skipped.empty())
            std::cout << "note: skipped packs were left in data/ but are in no index, so the next "
                         "backup or gc deletes them; move them elsewhere to keep them"
                      << std::endl;
    }
    if (error) return std::unexpected(*error);
    return {};
}

Status run_repair_records(const GlobalOptions& global) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto moved = repo::repair_records(**repo);
    if (!moved) return std::unexpected(moved.error());
    if (global.json) {
        json arr = json::array();
        for (const auto& q : *moved)
            arr.push_back({{"path", q.path}, {"why", q.why}, {"points_kept", q.kept}});
        std::cout << json{{"quarantined", arr}}.dump() << std::endl;
        return {};
    }
    for (const auto& q : *moved)
        std::cout << "quarantined " << q.path << ": " << q.why
                  << (q.kept ? "; its " + std::to_string(q.kept) +
                                   " sound point(s) were kept in a new commit record"
                             : std::string())
                  << std::endl;
    std::cout << "moved " << moved->size() << " damaged record(s) to "
              << (*repo)->dir(repo::format::kQuarantineDir) << "/";
    if (!moved->empty())
        std::cout << "; the data only they referenced is unreferenced now and gc removes it once "
                     "it is older than the grace period";
    std::cout << std::endl;
    return {};
}

void add_repo_repair_command(CLI::App& repo, GlobalOptions& global, Action& action) {
    CLI::App* repair =
        repo.add_subcommand("repair", "rebuild what can be rebuilt from the data itself");
    repair->require_subcommand(1);
    auto repair_read_data = std::make_shared<bool>(false);
    CLI::App* repair_index = repair->add_subcommand(
        "index",
        "rebuild the index from the pack files (exclusive lock); exit 8 when a pack had "
        "to be left out");
    repair_index->add_flag("--read-data", *repair_read_data,
                           "also read every pack and leave out those whose content does not "
                           "match their name");
    repair_index->callback([&global, &action, repair_read_data] {
        action = [&global, repair_read_data] {
            return run_repair_index(global, *repair_read_data);
        };
    });
    repair
        ->add_subcommand("records",
                         "move damaged commit records and annotations to quarantine/ (exclusive "
                         "lock), so gc and prune can run again")
        ->callback(
            [&global, &action] { action = [&global] { return run_repair_records(global); }; });
}

}  // namespace vmshadow::cli
