// SPDX-License-Identifier: MIT
// `vmshadow token create|list|revoke`: the bearer tokens of vmshadowd's HTTPS API (admin).
// A token's secret is shown once, at creation: the daemon keeps only its hash.
#include <iostream>

#include "cli/daemon_client.h"
#include "cli/daemon_views.h"
#include "cli/names.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

Status run_create(const GlobalOptions& global, const std::string& name, const std::string& role) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto created = daemon_call(*c, "POST", "/tokens", json{{"name", name}, {"role", role}});
    if (!created) return std::unexpected(created.error());
    if (global.json) {
        std::cout << created->dump() << std::endl;
        return {};
    }
    const std::string token = text_field(*created, "token");
    if (token.empty()) return fail(ErrorKind::io, "vmshadowd's answer holds no token");
    std::cout << printable(token) << std::endl;
    std::cerr << "token '" << name << "' (" << role
              << ") created: it is not shown again; clients send it as VMSHADOW_TOKEN "
                 "(Authorization: Bearer)"
              << std::endl;
    return {};
}

Status run_list(const GlobalOptions& global) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto tokens = daemon_call(*c, "GET", "/tokens");
    if (!tokens) return std::unexpected(tokens.error());
    if (global.json)
        std::cout << tokens->dump() << std::endl;
    else
        std::cout << token_table(*tokens) << std::flush;
    return {};
}

Status run_revoke(const GlobalOptions& global, const std::string& name) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto done = daemon_call(*c, "DELETE", "/tokens/" + name);
    if (!done) return std::unexpected(done.error());
    if (global.json)
        std::cout << done->dump() << std::endl;
    else
        std::cout << "revoked token " << name << std::endl;
    return {};
}

}  // namespace

void add_token_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* token = app.add_subcommand("token", "bearer tokens of vmshadowd's HTTPS API (admin)");
    token->require_subcommand(1);

    struct Create {
        std::string name, role;
    };
    auto create = std::make_shared<Create>();
    CLI::App* cr = token->add_subcommand("create", "make a token; its secret is shown once");
    add_daemon_name_option(*cr, "name", create->name, "the token's name")->required();
    cr->add_option("--role", create->role,
                   "audit (reads), operator (also runs jobs, restores, aborts), admin (also "
                   "edits jobs and tokens)")
        ->check(CLI::IsMember({"audit", "operator", "admin"}))
        ->required();
    cr->callback([&global, &action, create] {
        action = [&global, create] { return run_create(global, create->name, create->role); };
    });

    token->add_subcommand("list", "every token's name, role and creation time (no secrets)")
        ->callback([&global, &action] { action = [&global] { return run_list(global); }; });

    auto revoke = std::make_shared<std::string>();
    CLI::App* rv = token->add_subcommand("revoke", "delete a token: clients using it get 401");
    add_daemon_name_option(*rv, "name", *revoke, "the token's name")->required();
    rv->callback([&global, &action, revoke] {
        action = [&global, revoke] { return run_revoke(global, *revoke); };
    });
}

}  // namespace vmshadow::cli
