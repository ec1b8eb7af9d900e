// SPDX-License-Identifier: MIT
// `vmshadow checkpoint delete VM NAME [--subtree]`: the checkpoint's layer merged into what
// depends on it (engine/checkpoint_ops.h), while the VM runs or is off; prints each merge.
#include "cli/checkpoint_delete_command.h"

#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/checkpoint_ops.h"
#include "virt/connection.h"

namespace vmshadow::cli {
namespace {

Status run_checkpoint_delete(const GlobalOptions& g, const engine::CheckpointDeleteOptions& o) {
    auto connection = virt::Connection::open(g.connect_uri);
    if (!connection) return fail(connection.error());
    TaskContext idle;
    auto outcome = engine::delete_checkpoint(*connection, o, g.task ? *g.task : idle);
    if (!outcome) return fail(outcome.error());
    if (g.json) {
        nlohmann::json out{
            {"vm", o.vm}, {"deleted", outcome->deleted}, {"merges", outcome->merges}};
        std::cout << out.dump() << std::endl;
        return {};
    }
    for (const auto& m : outcome->merges) std::cout << "  " << m << "\n";
    for (const auto& name : outcome->deleted)
        std::cout << "vm '" << o.vm << "': checkpoint '" << name << "' deleted\n";
    std::cout << std::flush;
    return {};
}

}  // namespace

void add_checkpoint_delete_command(CLI::App& checkpoint, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<engine::CheckpointDeleteOptions>();
    auto* cmd = checkpoint.add_subcommand(
        "delete",
        "delete a checkpoint: its layer is merged into what depends on it (the VM may "
        "run); the other checkpoints keep their content");
    cmd->add_option("vm", o->vm, "VM name or UUID")->required();
    cmd->add_option("name", o->checkpoint, "checkpoint name or id")->required();
    cmd->add_flag("--subtree", o->subtree, "also delete every checkpoint below it");
    cmd->callback([&global, &action, o] {
        action = [&global, o] { return run_checkpoint_delete(global, *o); };
    });
}

}  // namespace vmshadow::cli
