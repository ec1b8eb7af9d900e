// SPDX-License-Identifier: MIT
// `vmshadow restore POINT [--as NAME [--to DIR]] [--replace] [--start] [--format qcow2|raw]
// [--instant [--bandwidth MIB]]`: a whole VM back from a restore point.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/names.h"
#include "cli/numeric_option.h"
#include "cli/repo_cli.h"
#include "common/byte_size.h"
#include "engine/vm_restore.h"
#include "vss/writer_report.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct RestoreCommandOptions {
    engine::VmRestoreOptions engine;
    std::string as_name;
    unsigned bandwidth_mib = 0;
    std::string state_file = vss::kDefaultWriterStateFile;
};

Status run_restore_command(const GlobalOptions& global, RestoreCommandOptions o) {
    if (!o.as_name.empty()) o.engine.as_name = o.as_name;
    if (o.bandwidth_mib > 0 && !o.engine.instant)
        return fail(ErrorKind::invalid_argument,
                    "--bandwidth limits the background copy of --instant: add --instant, or "
                    "leave it out");
    o.engine.copy_bandwidth = std::uint64_t{o.bandwidth_mib} << 20;
    o.engine.state_file = o.state_file;
    auto connection = virt::Connection::open(global.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    if (o.engine.instant && (*repo)->config().encrypted) {
        auto password = repository_password(global);
        if (!password) return std::unexpected(password.error());
        o.engine.password = *password;
    }
    o.engine.task = global.task;
    auto r = engine::restore_vm(**repo, *connection, o.engine);
    if (!r) return std::unexpected(r.error());
    if (global.json) {
        json disks = json::array(), files = json::array();
        for (const auto& d : r->disks)
            disks.push_back({{"disk", d.name}, {"path", d.path}, {"size", d.size}});
        for (const auto& f : r->files)
            files.push_back({{"role", f.name}, {"path", f.path}, {"size", f.size}});
        std::cout << json{{"point", r->point},
                          {"source_vm", r->source_vm},
                          {"vm", r->vm},
                          {"consistency", r->consistency},
                          {"disks", disks},
                          {"files", files},
                          {"replaced", r->replaced},
                          {"resumed", r->resumed},
                          {"started", r->started},
                          {"instant", r->instant},
                          {"notes", r->notes},
                          {"seconds", r->seconds}}
                         .dump()
                  << std::endl;
        return {};
    }
    std::printf("restored %s as VM '%s' from %s (%s-consistent) in %.1f s\n", r->source_vm.c_str(),
                r->vm.c_str(), r->point.substr(0, 12).c_str(), r->consistency.c_str(), r->seconds);
    for (const auto& d : r->disks)
        std::printf("  %s: %s (%s)\n", d.name.c_str(), d.path.c_str(),
                    format_bytes(d.size).c_str());
    for (const auto& f : r->files) std::printf("  %s: %s\n", f.name.c_str(), f.path.c_str());
    if (r->replaced) std::printf("  replaced the VM that had this name\n");
    if (r->resumed)
        std::printf("  resumed from its saved state\n");
    else if (r->started)
        std::printf("  started\n");
    for (const auto& n : r->notes) std::printf("  note: %s\n", n.c_str());
    return {};
}

}  // namespace

void add_restore_command(CLI::App& app, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<RestoreCommandOptions>();
    CLI::App* restore = app.add_subcommand(
        "restore",
        "restore a whole VM from a restore point: in place (same name and paths) or --as a new "
        "VM beside the original");
    restore
        ->add_option("point", o->engine.point, "restore point: id, unique id prefix or VM@latest")
        ->required();
    add_name_option(*restore, "--as", o->as_name,
                    "restore as a new VM of this name (new UUID and MAC addresses, own "
                    "folder), able to run beside the original");
    restore->add_option("--to", o->engine.to_dir,
                        "with --as: the folder for its disks and files (default: a folder named "
                        "after NAME beside the original's disks)");
    restore->add_flag("--replace", o->engine.replace,
                      "replace the VM (or the files) of that name: it is stopped and undefined "
                      "only after every restored file was written and checked");
    restore->add_flag("--start", o->engine.start,
                      "start the VM after the restore (a saved-state point restored in place "
                      "resumes anyway)");
    restore->add_flag("--instant", o->engine.instant,
                      "instant recovery: the VM runs from the repository within seconds while "
                      "its disks are copied to local qcow2 images, then it switches to them "
                      "without stopping (for a VM that does not exist: use --as); run it "
                      "again to resume one that was interrupted");
    add_whole_number_option(*restore, "--bandwidth", o->bandwidth_mib, 1, 1u << 20,
                            "with --instant: cap the background copy at this many MiB/s (leaves "
                            "the storage to the running VM; default: no cap)");
    restore->add_option("--format", o->engine.format, "disk format: qcow2 (default) or raw")
        ->check(CLI::IsMember({"qcow2", "raw"}));
    add_whole_number_option(*restore, "--workers", o->engine.workers, 1, kMaxWorkers,
                            "read/verify threads (default: two per core)");
    restore->add_option("--state-file", o->state_file, "writer state file (for `vmshadow writers`)")
        ->envname("VMSHADOW_WRITER_STATE");
    restore->callback([&global, &action, o] {
        action = [&global, o] { return run_restore_command(global, *o); };
    });
}

}  // namespace vmshadow::cli
