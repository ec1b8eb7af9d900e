// SPDX-License-Identifier: MIT
#include "cli/app.h"

namespace vmshadow::cli {

void add_thaw_guardian_command(CLI::App&, Action&) {}

}  // namespace vmshadow::cli
