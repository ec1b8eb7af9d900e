// SPDX-License-Identifier: MIT
#include "cli/app.h"

namespace vmshadow::cli {

void add_vm_commands(CLI::App&, GlobalOptions&, Action&) {}

}  // namespace vmshadow::cli
