// SPDX-License-Identifier: MIT
#pragma once
// `vmshadow repo …`: one command per file (repo_init_command.cpp, repo_check_command.cpp,
// repo_repair_command.cpp, repo_unlock_command.cpp, repo_stats_command.cpp,
// repo_key_command.cpp), each with its options, its flags (add_repo_*_command, called by
// add_repo_commands in repo_commands.cpp) and a run function a test can call without a
// terminal.
//
// These are the CLI's side only: parsing, opening the repository (repo_cli.h) and printing
// (text, or JSON with --json). The work is the repository's (repo/). Errors come back as
// Status; app.cpp prints them and exit_code.h maps their kinds.
//
// Thread-safety: each run function is one command's run; not for concurrent use.

#include <string>

#include "cli/app.h"

namespace vmshadow::cli {

struct InitOptions {
    std::string path;
    bool encrypt = false;
    std::string new_password_file;
    int zstd_level = 0;
};

Status run_init(const GlobalOptions& global, const InitOptions& o);
Status run_check(GlobalOptions& global, bool read_data);
Status run_stats(const GlobalOptions& global);
Status run_repair_index(GlobalOptions& global, bool read_data);
Status run_repair_records(const GlobalOptions& global);
Status run_unlock(const GlobalOptions& global, bool remove_all);

struct KeyOptions {
    std::string new_password_file;
    std::string key_id;
};

// verb: add, passwd, list or remove.
Status run_key(const GlobalOptions& global, const std::string& verb, const KeyOptions& o);

// Each registers its subcommand under `repo`.
void add_repo_init_command(CLI::App& repo, GlobalOptions& global, Action& action);
void add_repo_check_command(CLI::App& repo, GlobalOptions& global, Action& action);
void add_repo_repair_command(CLI::App& repo, GlobalOptions& global, Action& action);
void add_repo_unlock_command(CLI::App& repo, GlobalOptions& global, Action& action);
void add_repo_stats_command(CLI::App& repo, GlobalOptions& global, Action& action);
void add_repo_key_command(CLI::App& repo, GlobalOptions& global, Action& action);

}  // namespace vmshadow::cli
