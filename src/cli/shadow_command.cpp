// SPDX-License-Identifier: MIT
// `vmshadow shadow create|list|delete|copy` (engine/shadow_ops.h, docs/SHADOW-COPIES.md) and
// the hidden `__shadow-watch ID`, the watcher process every shadow runs.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/app.h"
#include "cli/numeric_option.h"
#include "common/byte_size.h"
#include "common/time_format.h"
#include "engine/shadow_ops.h"

namespace vmshadow::cli {
namespace {

using json = nlohmann::json;

struct ShadowCommandOptions {
    std::string vm;
    std::vector<std::string> disks;
    std::uint64_t max_size = 0;
    std::string mount_dir;
    std::string id;
    bool all = false;
    std::string copy_disk;
    std::string dest;
    std::string format = "qcow2";
    bool resume = false;
};

engine::ShadowSettings settings_of(const GlobalOptions& g) {
    engine::ShadowSettings s;
    s.connect_uri = g.connect_uri;
    if (!g.scratch_dir.empty()) s.scratch_dir = g.scratch_dir;
    return s;
}

void print_notes(const engine::ShadowNotes& notes) {
    for (const auto& n : notes) std::cerr << "vmshadow: " << n << std::endl;
}

json record_json(const engine::ShadowRecord& r, std::uint64_t used) {
    json disks = json::array();
    for (const auto& d : r.disks) {
        json disk = {{"disk", d.target}, {"size", d.size}, {"nbd_uri", r.nbd_uri(d)}};
        for (const auto& m : r.mounts) {
            if (m.disk == d.target) disk["file"] = m.link;
        }
        disks.push_back(std::move(disk));
    }
    json out = {{"id", r.id},
                {"vm", r.vm},
                {"uuid", r.uuid},
                {"created", iso8601_utc(r.created)},
                {"consistency", r.consistency},
                {"consistency_reason", r.consistency_reason},
                {"diff_area_used", used},
                {"diff_area_max", r.max_size},
                {"state", r.state},
                {"disks", disks}};
    if (!r.active()) {
        out["dropped_why"] = r.dropped_why;
        out["dropped_at"] = iso8601_utc(r.dropped_at);
    }
    return out;
}

Status run_create(const GlobalOptions& g, const ShadowCommandOptions& o) {
    auto created = engine::create_shadow(settings_of(g), {o.vm, o.disks, o.max_size, o.mount_dir});
    if (!created) return fail(created.error());
    print_notes(created->notes);
    const auto& r = created->record;
    if (g.json) {
        std::cout << record_json(r, 0).dump() << std::endl;
        return {};
    }
    std::cout << "id: " << r.id << "\n"
              << "vm: " << r.vm << "\n"
              << "consistency: " << r.consistency << " (" << r.consistency_reason << ")\n"
              << "diff area maximum: " << format_bytes(r.max_size) << "\n";
    for (const auto& d : r.disks) {
        std::cout << d.target << ": " << r.nbd_uri(d);
        for (const auto& m : r.mounts) {
            if (m.disk == d.target) std::cout << " (file " << m.link << ")";
        }
        std::cout << "\n";
    }
    std::cout << "delete it with `vmshadow shadow delete " << r.id << "`" << std::endl;
    return {};
}

Status run_list(const GlobalOptions& g) {
    auto list = engine::list_shadows(settings_of(g));
    if (!list) return fail(list.error());
    print_notes(list->notes);
    if (g.json) {
        json out = json::array();
        for (const auto& e : list->shadows) out.push_back(record_json(e.record, e.diff_used));
        std::cout << out.dump() << std::endl;
        return {};
    }
    if (list->shadows.empty()) {
        std::cout << "no shadow copies" << std::endl;
        return {};
    }
    std::printf("%-9s %-16s %-10s %-20s %-12s %-22s %s\n", "ID", "VM", "DISKS", "CREATED",
                "CONSISTENCY", "DIFF AREA", "STATE");
    for (const auto& e : list->shadows) {
        const auto& r = e.record;
        std::string disks;
        for (const auto& d : r.disks) disks += (disks.empty() ? "" : ",") + d.target;
        std::string area = r.active() ? format_bytes(e.diff_used) + " / " + format_bytes(r.max_size)
                                      : "- / " + format_bytes(r.max_size);
        std::string state =
            r.active() ? "active" : "dropped " + iso8601_utc(r.dropped_at) + ": " + r.dropped_why;
        std::printf("%-9s %-16s %-10s %-20s %-12s %-22s %s\n", r.id.c_str(), r.vm.c_str(),
                    disks.c_str(), iso8601_utc(r.created).c_str(), r.consistency.c_str(),
                    area.c_str(), state.c_str());
    }
    std::fflush(stdout);
    return {};
}

Status run_delete(const GlobalOptions& g, const ShadowCommandOptions& o) {
    if (o.all == !o.id.empty())
        return fail(ErrorKind::invalid_argument,
                    "shadow delete: give one shadow id or --all (see `vmshadow shadow list`)");
    auto deleted = engine::delete_shadows(settings_of(g), o.id);
    if (!deleted) return fail(deleted.error());
    print_notes(deleted->notes);
    if (g.json) {
        std::cout << json{{"deleted", deleted->ids}}.dump() << std::endl;
    } else {
        for (const auto& id : deleted->ids) std::cout << "deleted shadow " << id << std::endl;
    }
    return {};
}

Status run_copy(const GlobalOptions& g, const ShadowCommandOptions& o) {
    engine::ShadowCopyRequest request;
    request.vm = o.vm;
    request.disk = o.copy_disk;
    request.dest = o.dest;
    request.format = o.format;
    request.resume = o.resume;
    request.max_size = o.max_size;
    TaskContext fallback;
    auto report = engine::copy_through_shadow(settings_of(g), request, g.task ? *g.task : fallback);
    if (!report) return fail(report.error());
    print_notes(report->notes);
    if (g.json) {
        std::cout << json{{"shadow", report->shadow_id},
                          {"consistency", report->consistency},
                          {"consistency_reason", report->consistency_reason},
                          {"size", report->size},
                          {"data_copied", report->data_copied},
                          {"resumed_at", report->resumed_at},
                          {"sha256", report->sha256}}
                         .dump()
                  << std::endl;
        return {};
    }
    std::cout << "copied vm '" << o.vm << "' disk " << request.disk << " to " << o.dest << " ("
              << o.format << ", " << format_bytes(report->size) << ", "
              << format_bytes(report->data_copied) << " of data written"
              << (report->resumed_at ? ", resumed at " + format_bytes(report->resumed_at) : "")
              << ") through shadow " << report->shadow_id << ", " << report->consistency
              << "-consistent (" << report->consistency_reason << "); SHA-256 " << report->sha256
              << " verified" << std::endl;
    return {};
}

void add_watch_command(CLI::App& app, GlobalOptions& global, Action& action) {
    auto id = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand(engine::kShadowWatchCommand, "");
    cmd->group("");  // hidden: started by `shadow create` only
    cmd->add_option("id", *id)->required();
    cmd->callback([&global, &action, id] {
        action = [&global, id]() -> Status {
            std::exit(engine::run_shadow_watcher(settings_of(global), *id));
        };
    });
}

}  // namespace

void add_shadow_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<ShadowCommandOptions>();
    auto* shadow = app.add_subcommand(
        "shadow", "shadow copies: point-in-time read-only images of a running VM's disks");
    shadow->require_subcommand(1);

    auto* create = shadow->add_subcommand(
        "create",
        "take a shadow copy of a running VM's disks (application-consistent when "
        "the guest agent can freeze it)");
    create->add_option("vm", o->vm, "VM name or UUID")->required();
    create->add_option("--disk", o->disks, "a disk to cover, e.g. vda (repeat; default: all)");
    add_size_option(*create, "--max-size", o->max_size, 1ull << 20, 1ull << 50,
                    "drop the shadow before the guest's writes take more diff area than this, "
                    "e.g. 10G (default: 90% of the scratch directory's free space)");
    create->add_option("--mount", o->mount_dir,
                       "expose each disk as the read-only file DIR/<disk>");
    create->callback(
        [&global, &action, o] { action = [&global, o] { return run_create(global, *o); }; });

    auto* list = shadow->add_subcommand("list", "list shadow copies and their diff areas");
    list->callback([&global, &action] { action = [&global] { return run_list(global); }; });

    auto* del = shadow->add_subcommand("delete", "delete a shadow copy (or --all)");
    del->add_option("id", o->id, "shadow id (see `vmshadow shadow list`)");
    del->add_flag("--all", o->all, "delete every shadow copy");
    del->callback(
        [&global, &action, o] { action = [&global, o] { return run_delete(global, *o); }; });

    auto* copy = shadow->add_subcommand(
        "copy",
        "copy one disk of a running VM through a shadow copy: sparse, verified, "
        "restartable");
    copy->add_option("vm", o->vm, "VM name or UUID")->required();
    copy->add_option("--disk", o->copy_disk, "the disk to copy, e.g. vda")->required();
    copy->add_option("dest", o->dest, "the copy's file")->required();
    copy->add_option("--format", o->format, "qcow2 (default) or raw")
        ->check(CLI::IsMember({"qcow2", "raw"}));
    copy->add_flag("--resume", o->resume,
                   "continue an interrupted copy from DEST.vmshadow-copy, on the same shadow");
    add_size_option(*copy, "--max-size", o->max_size, 1ull << 20, 1ull << 50,
                    "the shadow's diff-area maximum (as for `shadow create`)");
    copy->callback(
        [&global, &action, o] { action = [&global, o] { return run_copy(global, *o); }; });

    add_watch_command(app, global, action);
}

}  // namespace vmshadow::cli
