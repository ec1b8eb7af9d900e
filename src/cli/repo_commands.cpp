// SPDX-License-Identifier: MIT
// `vmshadow repo …` (one command per repo_*_command.cpp) and the registration of every
// repository command.
#include "cli/repo_commands.h"

#include <functional>

#include "cli/repo_cli.h"

namespace vmshadow::cli {

void add_repo_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* repo = app.add_subcommand("repo", "create, check and inspect a repository");
    repo->require_subcommand(1);

    add_repo_init_command(*repo, global, action);
    add_repo_check_command(*repo, global, action);
    add_repo_repair_command(*repo, global, action);
    add_repo_unlock_command(*repo, global, action);
    add_repo_stats_command(*repo, global, action);
    add_repo_key_command(*repo, global, action);
}

void add_repository_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    app.add_option("--password-file", global.password_file,
                   "file whose first line is the repository password (else $VMSHADOW_PASSWORD, "
                   "else a prompt)");
    add_repo_commands(app, global, action);
    add_image_commands(app, global, action);
    add_points_commands(app, global, action);
    add_prune_commands(app, global, action);
    // Global options (--json, --repo, --password-file) may follow these subcommands too:
    // `vmshadow points --json`.
    std::function<void(CLI::App*)> fall = [&fall](CLI::App* a) {
        a->fallthrough();
        for (CLI::App* sub : a->get_subcommands({})) fall(sub);
    };
    for (const char* name : {"repo", "image", "points", "forget", "annotate", "prune", "gc"})
        fall(app.get_subcommand(name));
}

}  // namespace vmshadow::cli
