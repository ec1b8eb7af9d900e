// SPDX-License-Identifier: MIT
#pragma once
// Shared pieces of the repository commands (repo, image, points, forget, prune, gc):
// opening the repository with a password.
//
// Passwords come from, in order: $VMSHADOW_PASSWORD, --password-file, a prompt on the
// terminal. Without a terminal the prompt fails at once with a message naming both other
// ways, so a script never hangs.

#include <chrono>
#include <memory>
#include <string>

#include "cli/app.h"
#include "repo/repository.h"

namespace vmshadow::cli {

void add_repo_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_image_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_points_commands(CLI::App& app, GlobalOptions& global, Action& action);
void add_prune_commands(CLI::App& app, GlobalOptions& global, Action& action);

// The password of an existing repository.
Result<std::string> repository_password(const GlobalOptions& global);
// A new password (init --encrypt, key add/passwd): $VMSHADOW_NEW_PASSWORD, --new-password-file,
// or a prompt asked twice.
Result<std::string> new_password(const std::string& file, const std::string& env_name,
                                 const std::string& prompt);

Result<std::unique_ptr<repo::Repository>> open_repository(const GlobalOptions& global);

}  // namespace vmshadow::cli
