// SPDX-License-Identifier: MIT
// `vmshadow status`: every VM the daemon sees, its last backup, age, consistency, next run
// and protection state (GET /api/v1/vms).
#include <iostream>

#include "cli/daemon_client.h"
#include "cli/daemon_views.h"

namespace vmshadow::cli {
namespace {

Status run_status(const GlobalOptions& global) {
    auto connection = daemon_connection(global);
    if (!connection) return std::unexpected(connection.error());
    auto vms = daemon_call(*connection, "GET", "/vms");
    if (!vms) return std::unexpected(vms.error());
    if (global.json)
        std::cout << vms->dump() << std::endl;
    else
        std::cout << status_table(*vms) << std::flush;
    return {};
}

}  // namespace

void add_status_command(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* status = app.add_subcommand(
        "status",
        "one line per VM from vmshadowd: last backup, its age and consistency, next "
        "run, protection");
    status->callback([&global, &action] { action = [&global] { return run_status(global); }; });
}

}  // namespace vmshadow::cli
