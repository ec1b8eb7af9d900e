// SPDX-License-Identifier: MIT
// The hidden `__thaw-guardian` command: the thaw guardian process (virt/thaw_guardian.h),
// started by vmshadow itself around every freeze and pause. Not for users.
#include <cstdlib>

#include "cli/app.h"
#include "cli/numeric_option.h"
#include "engine/freeze_hold.h"

namespace vmshadow::cli {

void add_thaw_guardian_command(CLI::App& app, Action& action) {
    auto spec = std::make_shared<virt::GuardianSpec>();
    auto action_name = std::make_shared<std::string>("thaw");
    auto arm_ms = std::make_shared<long long>(40000);
    auto release_ms = std::make_shared<long long>(10000);
    auto settle_ms =
        std::make_shared<long long>(std::chrono::milliseconds(virt::kGuardianSettleLimit).count());
    auto* cmd = app.add_subcommand(kThawGuardianCommand, "");
    cmd->group("");  // hidden from --help
    cmd->add_option("--uuid", spec->domain_uuid)->required();
    cmd->add_option("--name", spec->domain_name);
    cmd->add_option("--connect", spec->connect_uri);
    cmd->add_option("--action", *action_name)->check(CLI::IsMember({"thaw", "resume"}));
    constexpr long long kDayMs = 86'400'000;
    add_whole_number_option(*cmd, "--arm-timeout-ms", *arm_ms, 1, kDayMs, "");
    add_whole_number_option(*cmd, "--release-after-ms", *release_ms, 0, kDayMs, "");
    add_whole_number_option(*cmd, "--settle-limit-ms", *settle_ms, 0, kDayMs, "");
    add_whole_number_option(*cmd, "--armed-fd", spec->armed_fd, -1, 1 << 20, "");
    cmd->callback([&action, spec, action_name, arm_ms, release_ms, settle_ms] {
        action = [spec, action_name, arm_ms, release_ms, settle_ms]() -> Status {
            spec->action = *action_name == "resume" ? virt::GuardianAction::resume
                                                    : virt::GuardianAction::thaw;
            spec->arm_timeout = std::chrono::milliseconds(*arm_ms);
            spec->release_after = std::chrono::milliseconds(*release_ms);
            spec->settle_limit = std::chrono::milliseconds(*settle_ms);
            std::exit(engine::run_thaw_guardian_process(*spec));
        };
    });
}

}  // namespace vmshadow::cli
