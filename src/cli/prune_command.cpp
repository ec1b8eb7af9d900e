// SPDX-License-Identifier: MIT
// `vmshadow prune --keep-… [--vm NAME] [--dry-run]` and `vmshadow gc`.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/names.h"
#include "cli/numeric_option.h"
#include "cli/repo_cli.h"
#include "common/time_format.h"
#include "repo/gc.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct PruneOptions {
    repo::KeepPolicy keep;
    std::string vm;
    bool dry_run = false;
    int grace_hours = repo::kDefaultGraceSeconds / 3600;
};

constexpr int kMaxGraceHours = static_cast<int>(repo::kMaxGraceSeconds / 3600);
const char* const kGraceHelp =
    "keep packs written less than HOURS ago even when no restore point references them (a "
    "point being written, or one whose commit record was lost); 0 frees them now";

json gc_json(const repo::GcReport& r) {
    return {{"packs_total", r.packs_total},
            {"packs_removed", r.packs_removed},
            {"packs_rewritten", r.packs_rewritten},
            {"packs_written", r.packs_written},
            {"blobs_live", r.blobs_live},
            {"blobs_dead", r.blobs_dead},
            {"leftovers_removed", r.leftovers_removed},
            {"annotations_removed", r.annotations_removed},
            {"packs_kept_within_grace", r.packs_kept_young},
            {"blobs_kept_within_grace", r.blobs_kept_young},
            {"grace_hours", r.grace_seconds / 3600},
            {"bytes_before", r.bytes_before},
            {"bytes_after", r.bytes_after}};
}

void print_gc(const repo::GcReport& r, bool dry_run) {
    std::cout << (dry_run ? "would remove " : "removed ") << r.packs_removed << " and rewrite "
              << r.packs_rewritten << " of " << r.packs_total << " packs (" << r.blobs_dead
              << " unused blobs); " << r.leftovers_removed << " leftovers and "
              << r.annotations_removed << " annotations of forgotten points removed" << std::endl;
    if (r.packs_kept_young > 0)
        std::cout << "kept " << r.blobs_kept_young << " unreferenced blobs in "
                  << r.packs_kept_young << " pack(s) written less than " << r.grace_seconds / 3600
                  << " h ago (the grace period; `gc --grace 0` frees them now)" << std::endl;
}

Status run_prune(const GlobalOptions& global, const PruneOptions& o) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    repo::GcOptions gc_options;
    gc_options.grace_seconds = std::int64_t{o.grace_hours} * 3600;
    gc_options.task = global.task;
    auto result = repo::prune(**repo, o.keep, o.vm, o.dry_run, gc_options);
    if (!result) return std::unexpected(result.error());
    const auto& plan = result->plan;
    const auto& gc = result->gc;
    if (global.json) {
        json arr = json::array();
        for (const auto& d : plan)
            arr.push_back({{"id", d.id.hex()},
                           {"vm", d.vm},
                           {"time", iso8601_utc(d.time)},
                           {"keep", d.keep},
                           {"reasons", d.reasons}});
        json out{{"dry_run", o.dry_run}, {"points", arr}};
        if (gc) out["gc"] = gc_json(*gc);
        std::cout << out.dump() << std::endl;
        return {};
    }
    for (const auto& d : plan) {
        std::string reasons;
        for (const auto& r : d.reasons) reasons += (reasons.empty() ? "" : ", ") + r;
        std::printf("%s %s  %s  %s  %s\n", d.keep ? "keep  " : "forget", d.id.short_hex().c_str(),
                    table_cell(d.vm, 20).c_str(), iso8601_utc(d.time).c_str(), reasons.c_str());
    }
    if (gc) print_gc(*gc, false);
    if (o.dry_run) std::cout << "dry run: nothing was changed" << std::endl;
    return {};
}

struct GcCliOptions {
    bool dry_run = false;
    int grace_hours = repo::kDefaultGraceSeconds / 3600;
};

Status run_gc(const GlobalOptions& global, const GcCliOptions& o) {
    bool dry_run = o.dry_run;
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    repo::GcOptions options;
    options.dry_run = dry_run;
    options.grace_seconds = std::int64_t{o.grace_hours} * 3600;
    options.task = global.task;
    auto r = repo::collect_garbage(**repo, options);
    if (!r) return std::unexpected(r.error());
    if (global.json)
        std::cout << gc_json(*r).dump() << std::endl;
    else
        print_gc(*r, dry_run);
    return {};
}

}  // namespace

void add_prune_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<PruneOptions>();
    CLI::App* prune = app.add_subcommand(
        "prune", "forget restore points by retention rules (per VM), then collect garbage");
    // A count below 1 would keep nothing: refused here, before any point is looked at.
    constexpr int kMaxKeep = repo::kMaxKeep;
    add_whole_number_option(*prune, "--keep-last", o->keep.last, 1, kMaxKeep,
                            "keep the N newest points");
    add_whole_number_option(*prune, "--keep-hourly", o->keep.hourly, 1, kMaxKeep,
                            "keep the newest point of N hours");
    add_whole_number_option(*prune, "--keep-daily", o->keep.daily, 1, kMaxKeep,
                            "keep the newest point of N days");
    add_whole_number_option(*prune, "--keep-weekly", o->keep.weekly, 1, kMaxKeep,
                            "keep the newest point of N weeks");
    add_whole_number_option(*prune, "--keep-monthly", o->keep.monthly, 1, kMaxKeep,
                            "keep the newest point of N months");
    add_whole_number_option(*prune, "--keep-yearly", o->keep.yearly, 1, kMaxKeep,
                            "keep the newest point of N years");
    prune->add_option("--vm", o->vm, "only this VM's points (others are untouched)");
    prune->add_flag("--dry-run", o->dry_run, "show the plan, change nothing");
    add_whole_number_option(*prune, "--grace", o->grace_hours, 0, kMaxGraceHours, kGraceHelp);
    prune->callback(
        [&global, &action, o] { action = [&global, o] { return run_prune(global, *o); }; });

    auto go = std::make_shared<GcCliOptions>();
    CLI::App* gc = app.add_subcommand(
        "gc", "delete data no restore point references (takes the exclusive lock)");
    gc->add_flag("--dry-run", go->dry_run, "report, change nothing");
    add_whole_number_option(*gc, "--grace", go->grace_hours, 0, kMaxGraceHours, kGraceHelp);
    gc->callback(
        [&global, &action, go] { action = [&global, go] { return run_gc(global, *go); }; });
}

}  // namespace vmshadow::cli
