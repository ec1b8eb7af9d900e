// SPDX-License-Identifier: MIT
// `vmshadow vm list [VM...] [--json]`: every VM with its state, disks, guest agent and the
// backup method it would get now, with the reasons.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/app.h"
#include "cli/names.h"
#include "common/byte_size.h"
#include "engine/inventory.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct VmListOptions {
    std::vector<std::string> vms;
};

std::string agent_summary(const vmwriter::AgentFacts& a) {
    if (!a.channel) return "no channel";
    if (a.answering) return "answering";
    if (a.channel_state == "disconnected") return "not connected";
    if (!a.error.empty()) return "not answering";
    return "not running";
}

json disk_json(const vmwriter::DiskFacts& d) {
    json j{{"target", d.spec.target},
           {"device", d.spec.device},
           {"path", d.spec.path},
           {"format", d.spec.format},
           {"backed_up", d.backed_up},
           {"virtual_size", d.sizes ? json(d.sizes->capacity) : json(nullptr)},
           {"allocated", d.sizes ? json(d.sizes->allocation) : json(nullptr)}};
    if (!d.backed_up) j["skip_reason"] = d.skip_reason;
    if (d.source_missing) j["missing"] = true;
    return j;
}

json report_json(const engine::VmReport& r) {
    const auto& f = r.facts;
    json disks = json::array();
    for (const auto& d : f.disks) disks.push_back(disk_json(d));
    json agent{{"channel", f.agent.channel},
               {"connected", f.agent.channel_state == "connected"},
               {"answering", f.agent.answering}};
    if (!f.agent.error.empty()) agent["error"] = f.agent.error;
    json filesystems = json::array();
    if (f.agent.filesystems) {
        for (const auto& fs : *f.agent.filesystems) {
            filesystems.push_back({{"mountpoint", fs.mountpoint},
                                   {"type", fs.type},
                                   {"disks", fs.disks},
                                   {"freezable", vmwriter::filesystem_is_freezable(fs.type)}});
        }
    }
    return {{"name", f.name},
            {"uuid", r.uuid},
            {"state", virt::state_name(f.state)},
            {"persistent", r.persistent},
            {"method", vmwriter::method_name(r.choice.method)},
            {"reasons", r.choice.reasons},
            {"disks", disks},
            {"agent", agent},
            {"filesystems", filesystems},
            {"checkpoints", {{"count", r.checkpoints}, {"warnings", r.checkpoint_warnings}}},
            {"scratch",
             {{"dir", f.scratch.dir},
              {"free", f.scratch.free_bytes},
              {"needed", f.scratch.needed_bytes}}}};
}

std::string disk_line(const vmwriter::DiskFacts& d) {
    std::ostringstream out;
    out << d.spec.target << " " << (d.spec.format.empty() ? "?" : d.spec.format);
    if (d.sizes) {
        out << " " << format_bytes(d.sizes->capacity) << " (" << format_bytes(d.sizes->allocation)
            << " used)";
    }
    if (d.source_missing) out << " MISSING";
    if (!d.backed_up) out << " [skipped: " << d.skip_reason << "]";
    out << " " << d.spec.path;
    return out.str();
}

void print_table(const std::vector<engine::VmReport>& reports) {
    if (reports.empty()) {
        std::cout << "no VMs defined" << std::endl;
        return;
    }
    std::cout << std::left << std::setw(24) << "NAME" << std::setw(10) << "STATE" << std::setw(13)
              << "METHOD"
              << "AGENT"
              << "\n";
    for (const auto& r : reports) {
        const auto& f = r.facts;
        // libvirt allows any character in a name: escaped, it stays on its row.
        std::cout << std::left << std::setw(24) << printable(f.name) << std::setw(10)
                  << virt::state_name(f.state) << std::setw(13)
                  << vmwriter::method_name(r.choice.method) << agent_summary(f.agent) << "\n";
        for (const auto& reason : r.choice.reasons) std::cout << "    why:  " << reason << "\n";
        for (const auto& d : f.disks) std::cout << "    disk: " << disk_line(d) << "\n";
        if (r.checkpoints > 0) std::cout << "    checkpoints: " << r.checkpoints << "\n";
        for (const auto& w : r.checkpoint_warnings) std::cout << "    warning: " << w << "\n";
    }
    std::cout.flush();
}

Status run_vm_list(const GlobalOptions& g, const VmListOptions& o) {
    engine::InventoryRequest request;
    request.connect_uri = g.connect_uri;
    request.vms = o.vms;
    if (!g.scratch_dir.empty()) request.scratch_dir = g.scratch_dir;
    request.allow_saved_state = g.allow_saved_state;
    auto reports = engine::take_inventory(request);
    if (!reports) return fail(reports.error());
    if (g.json) {
        json out = json::array();
        for (const auto& r : *reports) out.push_back(report_json(r));
        std::cout << out.dump(2) << std::endl;
    } else {
        print_table(*reports);
    }
    return {};
}

}  // namespace

void add_vm_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    auto* vm = app.add_subcommand("vm", "inspect virtual machines");
    vm->require_subcommand(1);
    auto options = std::make_shared<VmListOptions>();
    auto* list = vm->add_subcommand(
        "list", "list VMs with state, disks, guest agent and the backup method each would get");
    list->add_option("vms", options->vms, "VM names or UUIDs (default: all)");
    list->callback([&global, &action, options] {
        action = [&global, options] { return run_vm_list(global, *options); };
    });
    add_vm_freeze_command(*vm, global, action);
}

}  // namespace vmshadow::cli
