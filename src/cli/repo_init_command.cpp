// SPDX-License-Identifier: MIT
// `vmshadow repo init [PATH] [--encrypt] [--compression-level N]`: create a repository.
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/numeric_option.h"
#include "cli/repo_cli.h"
#include "cli/repo_commands.h"
#include "repo/format.h"

namespace vmshadow::cli {

using nlohmann::json;

Status run_init(const GlobalOptions& global, const InitOptions& o) {
    std::string path = o.path.empty() ? global.repo : o.path;
    if (path.empty())
        return fail(ErrorKind::invalid_argument, "repo init needs a PATH (or --repo)");
    repo::InitOptions init;
    init.storage = storage_options(global);
    init.encrypt = o.encrypt;
    init.zstd_level = o.zstd_level;
    if (o.encrypt) {
        // The first password may also come from the ordinary sources (VMSHADOW_PASSWORD,
        // --password-file), so scripts can init and use a repository with one setting.
        Result<std::string> password =
            !o.new_password_file.empty() || std::getenv("VMSHADOW_NEW_PASSWORD")
                ? new_password(o.new_password_file, "VMSHADOW_NEW_PASSWORD", "new password")
            : std::getenv("VMSHADOW_PASSWORD") || !global.password_file.empty()
                ? repository_password(global)
                : new_password("", "VMSHADOW_PASSWORD", "new repository password");
        if (!password) return std::unexpected(password.error());
        init.password = *password;
    }
    if (auto st = repo::Repository::init(path, init); !st) return st;
    if (global.json)
        std::cout << json{{"repository", path}, {"encrypted", o.encrypt}}.dump() << std::endl;
    else
        std::cout << "created " << (o.encrypt ? "encrypted " : "") << "repository at " << path
                  << std::endl;
    return {};
}

void add_repo_init_command(CLI::App& repo, GlobalOptions& global, Action& action) {
    auto init = std::make_shared<InitOptions>();
    CLI::App* init_cmd = repo.add_subcommand("init", "create a repository");
    init_cmd->add_option("path", init->path, "directory to create (default: --repo)");
    init_cmd->add_flag("--encrypt", init->encrypt,
                       "encrypt with AES-256-GCM under a key derived from a password");
    init_cmd->add_option("--new-password-file", init->new_password_file,
                         "file whose first line is the new password");
    add_whole_number_option(*init_cmd, "--compression-level", init->zstd_level, 1, 22,
                            "zstd level for this repository, 1-22 (default: " +
                                std::to_string(repo::format::kDefaultZstdLevel) + ")");
    init_cmd->callback(
        [&global, &action, init] { action = [&global, init] { return run_init(global, *init); }; });
}

}  // namespace vmshadow::cli
