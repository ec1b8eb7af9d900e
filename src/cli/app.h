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
#include <cstdint>
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
    // A repository on S3 and lock waits (repo_cli.h declares and reads them).
    std::string s3_credentials;          // --s3-credentials / VMSHADOW_S3_CREDENTIALS
    std::string cacert;                  // --cacert / VMSHADOW_S3_CACERT
    bool s3_virtual_hosted = false;      // --s3-virtual-hosted / VMSHADOW_S3_VIRTUAL_HOSTED
    unsigned s3_max_rps = 0;             // --s3-max-rps / VMSHADOW_S3_MAX_RPS; 0 = no cap
    std::uint64_t s3_max_bandwidth = 0;  // --s3-max-bandwidth / VMSHADOW_S3_MAX_BANDWIDTH
    std::string retry_lock;              // --retry-lock DURATION ("30s", "5m", "2h")
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
// The repository's access options (--s3-*, --cacert, --retry-lock), in repo_cli.cpp.
void add_repository_access_options(CLI::App& app, GlobalOptions& global);
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
