// SPDX-License-Identifier: MIT
#pragma once
// The vmshadow command line: global options, the command registry and the run loop.
//
// Each command lives in its own file (vm_list.cpp, ...) with an options struct, its flags and
// a run function returning Status; it registers itself from a `add_*_command` function
// listed in app.cpp. main() only calls run_cli(). Errors are printed once, here, as one line
// ("vmshadow: <message>") or, with --json, as {"error": ..., "kind": ...}; the exit code
// comes from exit_code.h.

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "common/error.h"
#include "common/task.h"

namespace vmshadow::cli {

// Options every command sees. Filled by CLI11 from flags, the environment and the config
// file (flags win over the environment, the environment over the config file).
struct GlobalOptions {
    std::string connect_uri;         // --connect / LIBVIRT_DEFAULT_URI; empty = libvirt's default
    std::string repo;                // --repo / VMSHADOW_REPO
    std::string config_file;         // --config
    bool json = false;               // --json: machine-readable output
    std::string scratch_dir;         // --scratch-dir: where backup scratch images go
    bool allow_saved_state = false;  // --allow-saved-state: `auto` may pause VMs (image method)
    std::string password_file;       // --password-file: repository password (see repo_cli.h)
    bool quiet = false;              // --quiet: no progress line
    std::string progress = "auto";   // --progress auto|json|none
    std::string daemon_url;  // --daemon / VMSHADOW_DAEMON: vmshadowd's API (daemon_client.h)
    std::string daemon_fingerprint;  // --fingerprint / VMSHADOW_FINGERPRINT: its pinned certificate
    // The running command's task: its progress, log and cancellation (SIGINT/SIGTERM). Set
    // by run_cli before the action runs; commands hand it to the engine.
    TaskContext* task = nullptr;
    // Set by a command that printed its own JSON error object (with partial results), so
    // the error is not printed twice.
    bool error_reported = false;
};

// The action the chosen subcommand wants to run after parsing.
using Action = std::function<Status()>;

// Hidden subcommand the thaw guardian is started with (see virt/thaw_guardian.h).
inline constexpr const char* kThawGuardianCommand = "__thaw-guardian";

int run_cli(int argc, char** argv);

// Declares every command and option on `app` (run_cli's parser; tests walk it).
void build_cli(CLI::App& app, GlobalOptions& global, Action& action);

// Command registration; each is defined in the command's own file.
void add_vm_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_thaw_guardian_command(CLI::App& app, Action& action);
void add_repository_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_writers_command(CLI::App& app, GlobalOptions& global, Action& action);
void add_vm_freeze_command(CLI::App& vm, GlobalOptions& global, Action& action);
void add_mount_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_backup_command(CLI::App& app, GlobalOptions& global, Action& action);
void add_restore_command(CLI::App& app, GlobalOptions& global, Action& action);
void add_verify_command(CLI::App& app, GlobalOptions& global, Action& action);
// Local, no daemon: Replica's certificates (net/cert_authority.h).
void add_cert_commands(CLI::App& app, GlobalOptions& global, Action& action);
// Clients of vmshadowd (daemon_client.h).
void add_status_command(CLI::App& app, GlobalOptions& global, Action& action);
void add_job_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_task_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_token_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_replica_commands(CLI::App& app, GlobalOptions& global, Action& action);
// Hyper-V's checkpoints of a VM (checkpoint_command.cpp).
void add_checkpoint_commands(CLI::App& app, GlobalOptions& global, Action& action);
// Shadow copies (engine/shadow_ops.h), with the hidden watcher command.
void add_shadow_commands(CLI::App& app, GlobalOptions& global, Action& action);

}  // namespace vmshadow::cli
