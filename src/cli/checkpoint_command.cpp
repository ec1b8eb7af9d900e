// SPDX-License-Identifier: MIT
// `vmshadow checkpoint create|list|apply|rename|delete`: Hyper-V's checkpoints of a VM
// (engine/checkpoint_ops.h). `delete` is registered from checkpoint_delete_command.cpp.
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/app.h"
#include "cli/checkpoint_delete_command.h"
#include "cli/checkpoint_views.h"
#include "engine/checkpoint_ops.h"
#include "virt/connection.h"

namespace vmshadow::cli {
namespace {

struct CreateOptions {
    engine::CheckpointCreateOptions engine;
    std::string type = "production";
};

struct ApplyOptions {
    engine::CheckpointApplyOptions engine;
    bool yes = false;
};

struct RenameOptions {
    std::string vm, checkpoint, new_name;
};

TaskContext& task_of(const GlobalOptions& g) {
    static TaskContext idle;
    return g.task ? *g.task : idle;
}

Status run_create(const GlobalOptions& g, CreateOptions& o) {
    auto type = engine::parse_checkpoint_type(o.type);
    if (!type) return fail(ErrorKind::invalid_argument, "--type is production or standard");
    o.engine.type = *type;
    auto connection = virt::Connection::open(g.connect_uri);
    if (!connection) return fail(connection.error());
    auto made = engine::create_checkpoint(*connection, o.engine, task_of(g));
    if (!made) return fail(made.error());
    if (g.json) {
        auto out = checkpoint_json(*made);
        out["vm"] = o.engine.vm;
        std::cout << out.dump() << std::endl;
        return {};
    }
    std::cout << "vm '" << o.engine.vm << "': checkpoint '" << made->name << "' (" << made->id
              << ") created: " << engine::checkpoint_type_name(made->type) << ", "
              << made->consistency << "\n";
    if (!made->note.empty()) std::cout << "  note: " << made->note << "\n";
    std::cout << std::flush;
    return {};
}

Status run_list(const GlobalOptions& g, const std::string& vm) {
    auto connection = virt::Connection::open(g.connect_uri);
    if (!connection) return fail(connection.error());
    auto tree = engine::list_checkpoints(*connection, vm);
    if (!tree) return fail(tree.error());
    if (g.json) {
        std::cout << checkpoint_tree_json(*tree).dump() << std::endl;
        return {};
    }
    if (tree->checkpoints.empty()) {
        std::cout << "vm '" << tree->vm_name << "' has no checkpoints" << std::endl;
        return {};
    }
    std::cout << render_checkpoint_tree(*tree) << std::flush;
    return {};
}

// What applying discards, said before anything is discarded (Hyper-V asks the same).
Result<std::string> apply_warning(virt::Connection& connection, const ApplyOptions& o) {
    auto tree = engine::list_checkpoints(connection, o.engine.vm);
    if (!tree) return fail(tree.error());
    auto target = engine::find_checkpoint(*tree, o.engine.checkpoint);
    if (!target) return fail(target.error());
    // Refusals the engine would make anyway, before the question rather than after it.
    if (auto st = engine::check_can_apply(*tree, **target); !st) return fail(st.error());
    auto domain = connection.lookup(o.engine.vm);
    if (!domain) return fail(domain.error());
    if (auto st = engine::refuse_if_shadowed(*domain, "checkpoint apply"); !st)
        return fail(st.error());
    auto state = domain->state();
    if (!state) return fail(state.error());
    bool on = *state == virt::DomainState::running || *state == virt::DomainState::paused;
    std::string since = "its last checkpoint";
    if (auto cur = engine::find_checkpoint(*tree, tree->current); cur && !tree->current.empty())
        since = "checkpoint '" + (*cur)->name + "'";
    std::string text = "Applying checkpoint '" + (*target)->name + "' to vm '" + tree->vm_name +
                       "' discards its current state: " +
                       (on ? "it is " + std::string(virt::state_name(*state)) +
                                 " and will be turned off, its memory lost, and "
                           : "") +
                       "everything written to its disks since " + since +
                       ". That state is kept only if you checkpoint it first (vmshadow "
                       "checkpoint create " +
                       tree->vm_name + ").";
    if ((*target)->type == engine::CheckpointType::standard)
        text += " The VM then resumes where the checkpoint was.";
    else
        text += o.engine.start ? " The VM is then started." : " The VM is then off.";
    return text;
}

Status confirm_apply(virt::Connection& connection, const ApplyOptions& o) {
    auto warning = apply_warning(connection, o);
    if (!warning) return fail(warning.error());
    if (o.yes) return {};
    if (::isatty(STDIN_FILENO) != 1)
        return fail(ErrorKind::invalid_argument,
                    *warning + " Refused: there is no terminal to ask on; pass --yes to apply.");
    std::cerr << *warning << "\nApply? [y/N] " << std::flush;
    std::string answer;
    std::getline(std::cin, answer);
    if (answer != "y" && answer != "Y" && answer != "yes")
        return fail(ErrorKind::cancelled, "checkpoint apply: not confirmed, nothing changed");
    return {};
}

Status run_apply(const GlobalOptions& g, const ApplyOptions& o) {
    auto connection = virt::Connection::open(g.connect_uri);
    if (!connection) return fail(connection.error());
    if (auto st = confirm_apply(*connection, o); !st) return st;
    auto outcome = engine::apply_checkpoint(*connection, o.engine, task_of(g));
    if (!outcome) return fail(outcome.error());
    if (g.json) {
        nlohmann::json out{{"vm", o.engine.vm},
                           {"applied", checkpoint_json(outcome->applied)},
                           {"running", outcome->running},
                           {"discarded", outcome->discarded}};
        std::cout << out.dump() << std::endl;
        return {};
    }
    std::cout << "vm '" << o.engine.vm << "': checkpoint '" << outcome->applied.name
              << "' applied; the VM is " << (outcome->running ? "running" : "off") << "\n";
    for (const auto& d : outcome->discarded) std::cout << "  discarded " << d << "\n";
    std::cout << std::flush;
    return {};
}

Status run_rename(const GlobalOptions& g, const RenameOptions& o) {
    auto connection = virt::Connection::open(g.connect_uri);
    if (!connection) return fail(connection.error());
    if (auto st = engine::rename_checkpoint(*connection, o.vm, o.checkpoint, o.new_name); !st)
        return st;
    if (g.json)
        std::cout << nlohmann::json{{"vm", o.vm},
                                    {"checkpoint", o.checkpoint},
                                    {"name", o.new_name}}
                         .dump()
                  << std::endl;
    else
        std::cout << "vm '" << o.vm << "': checkpoint '" << o.checkpoint << "' is now '"
                  << o.new_name << "'" << std::endl;
    return {};
}

void add_create(CLI::App& checkpoint, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<CreateOptions>();
    auto* cmd = checkpoint.add_subcommand(
        "create",
        "checkpoint a VM: production (guest frozen through its agent, disks only) or "
        "standard (disks and memory)");
    cmd->add_option("vm", o->engine.vm, "VM name or UUID")->required();
    cmd->add_option("name", o->engine.name, "checkpoint name (default: \"<VM> - (<time>)\")");
    cmd->add_option("--type", o->type, "production (default) or standard")
        ->check(CLI::IsMember({"production", "standard"}));
    cmd->add_flag("--fallback-standard", o->engine.fallback_standard,
                  "make a standard checkpoint when a production one is not possible");
    cmd->callback(
        [&global, &action, o] { action = [&global, o] { return run_create(global, *o); }; });
}

void add_list(CLI::App& checkpoint, GlobalOptions& global, Action& action) {
    auto vm = std::make_shared<std::string>();
    auto* cmd = checkpoint.add_subcommand("list", "a VM's checkpoint tree, with where \"Now\" is");
    cmd->add_option("vm", *vm, "VM name or UUID")->required();
    cmd->callback(
        [&global, &action, vm] { action = [&global, vm] { return run_list(global, *vm); }; });
}

void add_apply(CLI::App& checkpoint, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<ApplyOptions>();
    auto* cmd = checkpoint.add_subcommand(
        "apply", "return a VM to a checkpoint (its current state is discarded: it asks first)");
    cmd->add_option("vm", o->engine.vm, "VM name or UUID")->required();
    cmd->add_option("name", o->engine.checkpoint, "checkpoint name or id")->required();
    cmd->add_flag("--start", o->engine.start,
                  "start the VM after applying a production checkpoint");
    cmd->add_flag("-y,--yes", o->yes, "do not ask (scripts): the current state is discarded");
    cmd->callback(
        [&global, &action, o] { action = [&global, o] { return run_apply(global, *o); }; });
}

void add_rename(CLI::App& checkpoint, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<RenameOptions>();
    auto* cmd = checkpoint.add_subcommand("rename", "rename a checkpoint");
    cmd->add_option("vm", o->vm, "VM name or UUID")->required();
    cmd->add_option("name", o->checkpoint, "checkpoint name or id")->required();
    cmd->add_option("new_name", o->new_name, "its new name")->required();
    cmd->callback(
        [&global, &action, o] { action = [&global, o] { return run_rename(global, *o); }; });
}

}  // namespace

void add_checkpoint_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    auto* checkpoint = app.add_subcommand(
        "checkpoint", "checkpoints of a VM (Hyper-V's): create, list, apply, rename, delete");
    checkpoint->require_subcommand(1);
    add_create(*checkpoint, global, action);
    add_list(*checkpoint, global, action);
    add_apply(*checkpoint, global, action);
    add_rename(*checkpoint, global, action);
    add_checkpoint_delete_command(*checkpoint, global, action);
}

}  // namespace vmshadow::cli
