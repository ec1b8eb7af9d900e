// SPDX-License-Identifier: MIT
// `vmshadow vm freeze VM [--hold S] [--thaw-deadline S]`: freeze a guest's filesystems through
// its agent, hold, thaw — a diagnostic for guest freeze hooks, bounded by the thaw guardian.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/app.h"
#include "cli/numeric_option.h"
#include "engine/freeze_hold.h"

namespace vmshadow::cli {
namespace {

struct VmFreezeOptions {
    std::string vm;
    double hold_seconds = 0;
    double thaw_deadline_seconds = 10;
};

std::chrono::milliseconds ms(double seconds) {
    return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

Status run_vm_freeze(const GlobalOptions& g, const VmFreezeOptions& o) {
    engine::FreezeHoldRequest request;
    request.connect_uri = g.connect_uri;
    request.vm = o.vm;
    request.hold = ms(o.hold_seconds);
    request.thaw_deadline = ms(o.thaw_deadline_seconds);
    if (g.task) request.cancel = &g.task->cancel();
    auto report = engine::hold_freeze(request);
    if (!report) return fail(report.error());
    if (g.json) {
        nlohmann::json out{{"vm", o.vm},
                           {"frozen", report->frozen},
                           {"thawed", report->thawed},
                           {"freeze_call_ms", report->freeze_call.count()},
                           {"freeze_ms", report->window.count()}};
        std::cout << out.dump() << std::endl;
    } else {
        std::cout << "vm '" << o.vm << "': froze " << report->frozen << " filesystem(s) in "
                  << report->freeze_call.count() << " ms, thawed " << report->thawed << " after "
                  << report->window.count() << " ms" << std::endl;
    }
    return {};
}

}  // namespace

void add_vm_freeze_command(CLI::App& vm, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<VmFreezeOptions>();
    auto* cmd = vm.add_subcommand(
        "freeze", "freeze a guest's filesystems, hold, thaw (tests guest freeze hooks)");
    cmd->add_option("vm", o->vm, "VM name or UUID")->required();
    add_seconds_option(*cmd, "--hold", o->hold_seconds, 0, 3600,
                       "seconds to stay frozen (default 0)");
    add_seconds_option(*cmd, "--thaw-deadline", o->thaw_deadline_seconds, kMinThawDeadlineSeconds,
                       kMaxThawDeadlineSeconds,
                       "seconds after the freeze when the thaw guardian thaws regardless (default "
                       "10)");
    cmd->callback(
        [&global, &action, o] { action = [&global, o] { return run_vm_freeze(global, *o); }; });
}

}  // namespace vmshadow::cli
