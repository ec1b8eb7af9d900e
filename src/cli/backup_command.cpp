// SPDX-License-Identifier: MIT
// `vmshadow backup VM... [--method M] [--group] [--full] [--disk T] [--exclude-disk T]
//  [--max-scratch SIZE]`: live (or offline) VM backups into the repository.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/exit_code.h"
#include "cli/numeric_option.h"
#include "cli/repo_cli.h"
#include "common/byte_size.h"
#include "engine/vm_backup.h"
#include "engine/vm_backup_json.h"
#include "vss/exec_writer_config.h"
#include "vss/writer_report.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct BackupCommandOptions {
    std::vector<std::string> vms;
    std::string method = "auto";
    bool group = false;
    bool full = false;
    std::vector<std::string> disks;
    std::vector<std::string> exclude_disks;
    std::uint64_t max_scratch = 0;  // 0: 90% of the scratch directory's free space
    double thaw_deadline_s = 10;
    int freeze_timeout_s = 30;
    std::string writers_dir = vss::kDefaultExecWritersDir;
    std::string state_file = vss::kDefaultWriterStateFile;
};

void print_outcome(const engine::VmBackupOutcome& o) {
    if (o.error) {
        std::printf("%s: FAILED: %s\n", o.vm.c_str(), o.error->message().c_str());
        return;
    }
    std::printf("%s: restore point %s, %s-consistent (method %s)\n", o.vm.c_str(),
                o.point ? o.point->substr(0, 12).c_str() : "-", o.consistency.c_str(),
                o.method.c_str());
    for (const auto& r : o.reasons) std::printf("  why: %s\n", r.c_str());
    if (o.freeze_ms) {
        std::printf("  freeze window %lld ms (the guest's freeze call took %lld ms)\n",
                    static_cast<long long>(*o.freeze_ms),
                    static_cast<long long>(o.quiesce_ms.value_or(0)));
    }
    if (o.paused_ms) std::printf("  vCPUs paused %lld ms\n", static_cast<long long>(*o.paused_ms));
    for (const auto& d : o.disks) {
        std::printf("  %s: %s, %s, read %s, added %s%s%s\n", d.target.c_str(),
                    format_bytes(d.size).c_str(), d.mode.c_str(),
                    format_bytes(d.bytes_read).c_str(), format_bytes(d.bytes_added).c_str(),
                    d.note.empty() ? "" : " — ", d.note.c_str());
    }
    for (const auto& s : o.skipped) std::printf("  skipped %s\n", s.c_str());
    for (const auto& n : o.notes) std::printf("  note: %s\n", n.c_str());
    std::printf("  added %s in %.1f s\n", format_bytes(o.bytes_added).c_str(), o.seconds);
}

Status run_backup_command(GlobalOptions& global, const BackupCommandOptions& o) {
    engine::VmBackupOptions options;
    options.vms = o.vms;
    if (o.method != "auto") {
        options.method = vmwriter::parse_method(o.method);
        if (!options.method || *options.method == vmwriter::BackupMethod::offline) {
            return fail(ErrorKind::invalid_argument,
                        "--method " + o.method + ": use auto, application, image or crash");
        }
    }
    options.max_scratch = o.max_scratch;
    options.group = o.group;
    options.full = o.full;
    options.disks = o.disks;
    options.exclude_disks = o.exclude_disks;
    options.allow_saved_state = global.allow_saved_state;
    if (!global.scratch_dir.empty()) options.scratch_dir = global.scratch_dir;
    options.writers_dir = o.writers_dir;
    options.state_file = o.state_file;
    options.freeze.thaw_deadline =
        std::chrono::milliseconds(static_cast<std::int64_t>(o.thaw_deadline_s * 1000));
    options.freeze.freeze_timeout = std::chrono::seconds(o.freeze_timeout_s);

    auto connection = virt::Connection::open(global.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    options.freeze.connect_uri = connection->uri();
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());

    options.task = global.task;
    engine::VmBackupReport report = engine::backup_vms(**repo, *connection, options);

    if (global.json) {
        json vms = json::array();
        for (const auto& v : report.vms) vms.push_back(engine::vm_backup_outcome_json(v));
        json out{{"vms", vms}};
        if (report.error) {
            out["error"] = report.error->message();
            out["kind"] = kind_name(report.error->kind());
            out["exit_code"] = exit_code_for(report.error->kind());
            global.error_reported = true;
        }
        std::cout << out.dump() << std::endl;
    } else {
        for (const auto& v : report.vms) print_outcome(v);
    }
    if (report.error) return std::unexpected(*report.error);
    return {};
}

}  // namespace

void add_backup_command(CLI::App& app, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<BackupCommandOptions>();
    CLI::App* backup = app.add_subcommand(
        "backup",
        "back up VMs into the repository: application-consistent through the guest agent when "
        "it can, incremental when a previous restore point of the VM exists");
    backup->add_option("vms", o->vms, "VM names or UUIDs")->required();
    backup
        ->add_option("-m,--method", o->method,
                     "auto (default), application (agent freeze), image (saved state: paused, "
                     "memory saved) or crash (no freeze); an asked method that can't be had "
                     "fails with the cause")
        ->check(CLI::IsMember({"auto", "application", "image", "crash"}));
    backup->add_flag("--group", o->group,
                     "capture all VMs at one instant (all frozen before any snapshot) and keep "
                     "all restore points or none");
    backup->add_flag("--full", o->full,
                     "read every disk in full (unchanged chunks are still deduplicated)");
    backup->add_option("--disk", o->disks, "back up only this disk target (repeatable)");
    backup->add_option("--exclude-disk", o->exclude_disks, "skip this disk target (repeatable)");
    add_size_option(*backup, "--max-scratch", o->max_scratch, 1ull << 20, 1ull << 50,
                    "abort the backup before the guest's writes during it take more scratch "
                    "space than this, e.g. 20G (default: 90% of the scratch directory's free "
                    "space)");
    add_seconds_option(*backup, "--thaw-deadline", o->thaw_deadline_s, kMinThawDeadlineSeconds,
                       kMaxThawDeadlineSeconds,
                       "seconds after a freeze when the thaw guardian thaws regardless "
                       "(default 10)");
    // At most 45 s: the coordinator gives a writer's freeze event 60 s, ping and all.
    add_whole_number_option(*backup, "--freeze-timeout", o->freeze_timeout_s, 1, 45,
                            "seconds the guest agent's freeze (the guest's freeze hooks included) "
                            "may take before the backup fails; the thaw guardian then keeps "
                            "thawing until the agent reports the guest thawed (default 30)");
    backup
        ->add_option("--writers-dir", o->writers_dir,
                     "exec writer configs (default /etc/vmshadow/writers.d)")
        ->envname("VMSHADOW_WRITERS_DIR");
    backup
        ->add_option("--state-file", o->state_file,
                     "where the writers' states are recorded for `vmshadow writers` (default "
                     "/var/lib/vmshadow/writers.json)")
        ->envname("VMSHADOW_WRITER_STATE");
    backup->callback([&global, &action, o] {
        action = [&global, o] { return run_backup_command(global, *o); };
    });
}

}  // namespace vmshadow::cli
