// SPDX-License-Identifier: MIT
#pragma once
// `vmshadow checkpoint delete VM NAME [--subtree]`, registered on the `checkpoint` command
// (checkpoint_command.cpp calls this), defined in checkpoint_delete_command.cpp.

#include <CLI/CLI.hpp>

#include "cli/app.h"

namespace vmshadow::cli {

void add_checkpoint_delete_command(CLI::App& checkpoint, GlobalOptions& global, Action& action);

}  // namespace vmshadow::cli
