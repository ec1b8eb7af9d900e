// SPDX-License-Identifier: MIT
#include "engine/freeze_hold.h"

#include <thread>

#include "virt/connection.h"
#include "virt/freeze_guard.h"

namespace vmshadow::engine {

Result<FreezeHoldReport> hold_freeze(const FreezeHoldRequest& request) {
    auto conn = virt::Connection::open(request.connect_uri);
    if (!conn) return fail(conn.error());
    auto domain = conn->lookup(request.vm);
    if (!domain) return fail(domain.error());
    auto state = domain->state();
    if (!state) return fail(state.error());
    if (*state != virt::DomainState::running) {
        return fail(ErrorKind::conflict, domain->label() + " is " +
                                             std::string(virt::state_name(*state)) +
                                             ": only a running guest can be frozen");
    }

    virt::FreezeSettings settings;
    settings.connect_uri = conn->uri();
    settings.thaw_deadline = request.thaw_deadline;
    auto guard = virt::FreezeGuard::freeze(*domain, settings);
    if (!guard) return fail(guard.error());
    if (request.cancel)
        (void)request.cancel->sleep_for(request.hold);
    else
        std::this_thread::sleep_for(request.hold);
    auto thawed = guard->thaw();
    if (!thawed) return fail(thawed.error());

    FreezeHoldReport report;
    report.frozen = thawed->frozen;
    report.thawed = thawed->thawed;
    report.freeze_call = guard->freeze_call();
    report.window = thawed->window;
    if (thawed->window_broken()) {
        return fail(ErrorKind::timeout,
                    domain->label() +
                        ": the thaw guardian thawed the guest before vmshadow did: "
                        "the freeze was held past its " +
                        std::to_string(request.thaw_deadline.count()) + " ms limit");
    }
    return report;
}

int run_thaw_guardian_process(const virt::GuardianSpec& spec) {
    return virt::run_thaw_guardian(spec);
}

}  // namespace vmshadow::engine
