// SPDX-License-Identifier: MIT
#include "cli/app.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/exit_code.h"
#include "cli/interrupt.h"
#include "cli/progress_output.h"

namespace vmshadow::cli {
namespace {

constexpr const char* kDefaultConfig = "/etc/vmshadow/vmshadow.conf";

void add_global_options(CLI::App& app, GlobalOptions& g) {
    app.add_option("-c,--connect", g.connect_uri,
                   "libvirt URI (default: $LIBVIRT_DEFAULT_URI, else libvirt's default)")
        ->envname("LIBVIRT_DEFAULT_URI");
    app.add_option("-r,--repo", g.repo, "repository path")->envname("VMSHADOW_REPO");
    app.add_flag("--json", g.json, "machine-readable JSON output");
    app.add_option("--scratch-dir", g.scratch_dir,
                   "directory for backup scratch images (default: /var/tmp)")
        ->envname("VMSHADOW_SCRATCH_DIR");
    app.add_flag("--allow-saved-state", g.allow_saved_state,
                 "let --method auto pause a VM for a saved-state (image) backup when an "
                 "application-consistent one can't be had (default: off)");
    app.add_flag("-q,--quiet", g.quiet, "no progress line on the terminal");
    app.add_option("--progress", g.progress,
                   "progress: auto (a live line when on a terminal), json (JSON lines on "
                   "stderr), none")
        ->check(CLI::IsMember({"auto", "json", "none"}));
    app.add_option(
           "--daemon", g.daemon_url,
           "vmshadowd's API for status/job/task/token/replica: unix:PATH or https://HOST:PORT "
           "(default: unix:/var/lib/vmshadow/api.sock; https sends $VMSHADOW_TOKEN)")
        ->envname("VMSHADOW_DAEMON");
    app.add_option("--fingerprint", g.daemon_fingerprint,
                   "SHA-256 fingerprint of an https daemon's certificate (as vmshadowd prints it)")
        ->envname("VMSHADOW_FINGERPRINT");
    app.set_config("--config", kDefaultConfig,
                   "config file (TOML/INI keys named like the long options)", false);
    app.get_config_ptr()->envname("VMSHADOW_CONFIG");
}

int report(const Error& error, bool json) {
    if (json) {
        nlohmann::json out{{"error", error.message()}, {"kind", kind_name(error.kind())}};
        std::cout << out.dump() << std::endl;
    } else {
        std::cerr << "vmshadow: " << error.message() << std::endl;
    }
    return exit_code_for(error.kind());
}

}  // namespace

void build_cli(CLI::App& app, GlobalOptions& global, Action& action) {
    app.footer(exit_code_table());
    app.require_subcommand(1);
    // Global options may follow the subcommand (`vm list --json`), as users type them.
    app.fallthrough();
    add_global_options(app, global);
    add_repository_access_options(app, global);
    add_vm_commands(app, global, action);
    add_thaw_guardian_command(app, action);
    add_repository_commands(app, global, action);
    add_writers_command(app, global, action);
    add_mount_commands(app, global, action);
    add_backup_command(app, global, action);
    add_restore_command(app, global, action);
    add_verify_command(app, global, action);
    add_cert_commands(app, global, action);
    add_status_command(app, global, action);
    add_job_commands(app, global, action);
    add_task_commands(app, global, action);
    add_token_commands(app, global, action);
    add_replica_commands(app, global, action);
    add_checkpoint_commands(app, global, action);
    add_shadow_commands(app, global, action);
}

int run_cli(int argc, char** argv) {
    // A peer that went away (a thaw guardian that already acted, an NBD server) must be an
    // error we report, not a signal that kills vmshadow mid-job.
    ::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"vmshadow: application-consistent backup and restore of libvirt/KVM VMs"};
    GlobalOptions global;
    Action action;
    build_cli(app, global, action);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        return report(
            Error(ErrorKind::invalid_argument, std::string(e.what()) + " (see `vmshadow --help`)"),
            global.json);
    }
    if (!action) return report(Error(ErrorKind::internal, "no command ran"), global.json);
    // Scratch images are handed to libvirtd and the thaw guardian, which do not share our
    // working directory: a relative --scratch-dir means the one under the user's.
    if (!global.scratch_dir.empty()) {
        std::error_code ec;
        auto absolute = std::filesystem::absolute(global.scratch_dir, ec);
        if (!ec) global.scratch_dir = absolute.lexically_normal().string();
    }
    CancelToken cancel;
    // The thaw guardian keeps the default dispositions: it must die of a SIGTERM meant for it.
    std::optional<InterruptGuard> interrupt;
    // So does a shadow's watcher (`shadow delete` stops it with SIGTERM).
    if (!app.got_subcommand(kThawGuardianCommand) && !app.got_subcommand("__shadow-watch"))
        interrupt.emplace(cancel);
    auto interrupted = [&] { return interrupt && interrupt->signal() != 0; };
    auto mode = global.progress == "json"   ? ProgressMode::json
                : global.progress == "none" ? ProgressMode::none
                                            : ProgressMode::automatic;
    auto progress = make_progress_output(mode, global.quiet || global.json);
    TaskContext task(progress.get(), nullptr, cancel, system_clock());
    global.task = &task;
    Status status = action();
    if (progress) progress->finish();
    if (!status && interrupted() && status.error().kind() != ErrorKind::cancelled) {
        // A child in our process group (qemu-img, nbdfuse) got the terminal's ^C too and its
        // failure is the interruption's, not a fault of its own.
        status = fail(ErrorKind::cancelled, "interrupted: " + status.error().message());
    }
    if (!status && global.error_reported) return exit_code_for(status.error().kind());
    if (!status) return report(status.error(), global.json);
    if (interrupted()) {
        // The command finished its last step before it saw the request: what it did stands.
        std::cerr << "vmshadow: interrupted after the command completed; its result stands"
                  << std::endl;
    }
    return exit_ok;
}

}  // namespace vmshadow::cli
