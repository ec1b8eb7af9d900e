// SPDX-License-Identifier: MIT
#pragma once
// Shared pieces of the repository commands (repo, image, points, forget, prune, gc):
// opening the repository with a password, on a local path or S3.
//
// A repository on S3 ("s3:https://HOST[:PORT]/BUCKET[/PREFIX]") is reached with the global
// options --s3-credentials FILE, --cacert FILE, --s3-virtual-hosted, --s3-max-rps N and
// --s3-max-bandwidth SIZE (each also from its VMSHADOW_S3_* variable, see
// repo/storage_options.h) and AWS_* credentials from the environment. --retry-lock DURATION
// makes every locking command wait that long for a lock another process holds (restic's
// --retry-lock) instead of failing at once. The object store's retries are logged on stderr.
//
// Passwords come from, in order: $VMSHADOW_PASSWORD, --password-file, a prompt on the
// terminal. Without a terminal the prompt fails at once with a message naming both other
// ways, so a script never hangs.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cli/app.h"
#include "repo/repository.h"

namespace vmshadow::cli {

// What they say, as the repository takes them (init and open alike).
repo::StorageOptions storage_options(const GlobalOptions& global);
// --retry-lock: "30s", "5m", "2h", "1h30m" or plain seconds; nullopt when malformed.
std::optional<std::int64_t> parse_lock_wait(std::string_view text);

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
