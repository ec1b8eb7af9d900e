// SPDX-License-Identifier: MIT
// `vmshadow points [VM]`, `vmshadow forget POINT...`, `vmshadow annotate POINT KIND`.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/names.h"
#include "cli/repo_cli.h"
#include "common/byte_size.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

Status run_points(const GlobalOptions& global, const std::string& vm) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    for (const auto& e : listing->damaged)
        std::cerr << "vmshadow: warning: " << e.message() << std::endl;
    json arr = json::array();
    for (const auto& p : listing->points)
        if (vm.empty() || p.vm == vm) arr.push_back(repo::point_summary_json(p));
    if (global.json) {
        std::cout << arr.dump() << std::endl;
        return {};
    }
    std::printf("%-12s  %-20s  %-20s  %-11s  %10s  %s\n", "ID", "VM", "TIME", "CONSISTENCY",
                "ADDED", "DISKS");
    for (const auto& p : arr) {
        std::string disks;
        for (const auto& d : p["disks"])
            disks += (disks.empty() ? "" : ", ") + d["name"].get<std::string>() + " " +
                     format_bytes(d["size"].get<std::uint64_t>());
        // Stored strings go through table_cell/printable: a name written by an older
        // version may hold a newline or be 300 characters long.
        std::printf("%-12s  %s  %-20s  %s  %10s  %s\n", p["short_id"].get<std::string>().c_str(),
                    table_cell(p["vm"].get<std::string>(), 20).c_str(),
                    p["time"].get<std::string>().c_str(),
                    table_cell(p["consistency"].get<std::string>(), 11).c_str(),
                    format_bytes(p["bytes_added"].get<std::uint64_t>()).c_str(),
                    printable(disks).c_str());
        for (const auto& a : p["annotations"])
            std::printf("%14s%s %s: %s\n", "", a["time"].get<std::string>().c_str(),
                        printable(a["kind"].get<std::string>()).c_str(),
                        printable(a["data"].dump()).c_str());
    }
    return {};
}

Status run_forget(const GlobalOptions& global, const std::vector<std::string>& specs) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::exclusive, "forget");
    if (!lock) return std::unexpected(lock.error());
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    std::vector<repo::Hash256> ids;
    json out = json::array();
    for (const auto& spec : specs) {
        auto p = repo::Repository::resolve(*listing, spec);
        if (!p) return std::unexpected(p.error());
        ids.push_back(p->id);
        out.push_back(p->id.hex());
    }
    if (auto st = (*repo)->forget(ids); !st) return st;
    if (global.json)
        std::cout << json{{"forgotten", out}}.dump() << std::endl;
    else
        for (const auto& id : out)
            std::cout << "forgot " << id.get<std::string>() << " (run `vmshadow gc` to free space)"
                      << std::endl;
    return {};
}

struct AnnotateOptions {
    std::string point, kind, data = "{}";
};

Status run_annotate(const GlobalOptions& global, const AnnotateOptions& o) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::shared, "annotate");
    if (!lock) return std::unexpected(lock.error());
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    auto p = repo::Repository::resolve(*listing, o.point);
    if (!p) return std::unexpected(p.error());
    json data = json::parse(o.data, nullptr, false);
    if (data.is_discarded()) return fail(ErrorKind::invalid_argument, "--data is not valid JSON");
    return (*repo)->annotate(p->id, o.kind, data);
}

}  // namespace

void add_points_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    auto vm = std::make_shared<std::string>();
    CLI::App* points = app.add_subcommand("points", "list restore points, oldest first");
    points->add_option("vm", *vm, "only this VM or image name");
    points->callback(
        [&global, &action, vm] { action = [&global, vm] { return run_points(global, *vm); }; });

    auto specs = std::make_shared<std::vector<std::string>>();
    CLI::App* forget = app.add_subcommand(
        "forget", "remove restore points (their data is freed by `vmshadow gc`)");
    forget->add_option("points", *specs, "id, unique id prefix or NAME@latest")->required();
    forget->callback([&global, &action, specs] {
        action = [&global, specs] { return run_forget(global, *specs); };
    });

    auto a = std::make_shared<AnnotateOptions>();
    CLI::App* annotate = app.add_subcommand(
        "annotate", "attach a result learnt later (e.g. a boot verification) to a restore point");
    annotate->add_option("point", a->point, "restore point")->required();
    add_name_option(*annotate, "kind", a->kind, "what it records, e.g. boot_verification")
        ->required();
    annotate->add_option("--data", a->data, "JSON object with the details");
    annotate->callback(
        [&global, &action, a] { action = [&global, a] { return run_annotate(global, *a); }; });
}

}  // namespace vmshadow::cli
