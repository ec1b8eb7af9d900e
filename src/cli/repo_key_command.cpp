// SPDX-License-Identifier: MIT
// `vmshadow repo key add|passwd|list|remove`: the passwords of an encrypted repository.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/repo_cli.h"
#include "cli/repo_commands.h"
#include "repo/keys.h"

namespace vmshadow::cli {

using nlohmann::json;

Status run_key(const GlobalOptions& global, const std::string& verb, const KeyOptions& o) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    const repo::MasterKey* key = (*repo)->master_key();
    if (!key) return fail(ErrorKind::invalid_argument, "repository is not encrypted: no keys");
    repo::Env& env = (*repo)->env();
    const std::string& root = (*repo)->root();
    if (verb == "list") {
        auto ids = repo::list_keys(env, root);
        if (!ids) return std::unexpected(ids.error());
        json arr = json::array();
        for (const auto& id : *ids)
            arr.push_back({{"id", id}, {"current", id == (*repo)->key_id()}});
        if (global.json)
            std::cout << arr.dump() << std::endl;
        else
            for (const auto& k : arr)
                std::cout << (k["current"].get<bool>() ? "* " : "  ") << k["id"].get<std::string>()
                          << std::endl;
        return {};
    }
    if (verb == "add" || verb == "passwd") {
        auto password = new_password(o.new_password_file, "VMSHADOW_NEW_PASSWORD", "new password");
        if (!password) return std::unexpected(password.error());
        auto id = repo::add_key(env, root, *key, *password, repo::ScryptParams{});
        if (!id) return std::unexpected(id.error());
        if (verb == "passwd")
            if (auto st = repo::remove_key(env, root, (*repo)->key_id()); !st) return st;
        std::cout << (verb == "add" ? "added key " : "password changed; new key ") << *id
                  << std::endl;
        return {};
    }
    // remove
    auto ids = repo::list_keys(env, root);
    if (!ids) return std::unexpected(ids.error());
    if (o.key_id == (*repo)->key_id())
        return fail(ErrorKind::invalid_argument,
                    "refusing to remove the key this password opened; open the repository with "
                    "another password to remove it");
    if (ids->size() <= 1)
        return fail(ErrorKind::invalid_argument, "refusing to remove the last key");
    if (auto st = repo::remove_key(env, root, o.key_id); !st) return st;
    std::cout << "removed key " << o.key_id << std::endl;
    return {};
}

void add_repo_key_command(CLI::App& repo, GlobalOptions& global, Action& action) {
    CLI::App* key = repo.add_subcommand("key", "manage the passwords of an encrypted repository");
    key->require_subcommand(1);
    auto ko = std::make_shared<KeyOptions>();
    for (const char* verb : {"add", "passwd", "list", "remove"}) {
        std::string v = verb;
        std::string help = v == "add"      ? "add a password"
                           : v == "passwd" ? "change the password used to open the repository"
                           : v == "list"   ? "list key ids (* = opened by this password)"
                                           : "remove a key (not the one in use, not the last)";
        CLI::App* sub = key->add_subcommand(v, help);
        if (v == "add" || v == "passwd")
            sub->add_option("--new-password-file", ko->new_password_file,
                            "file whose first line is the new password "
                            "(default: $VMSHADOW_NEW_PASSWORD or a prompt)");
        if (v == "remove")
            sub->add_option("id", ko->key_id, "key id (see `repo key list`)")->required();
        sub->callback([&global, &action, ko, v] {
            action = [&global, ko, v] { return run_key(global, v, *ko); };
        });
    }
}

}  // namespace vmshadow::cli
