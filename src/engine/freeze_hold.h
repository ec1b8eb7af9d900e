// SPDX-License-Identifier: MIT
#pragma once
// Freeze hold: freezes one VM's guest filesystems through its agent, holds them frozen for a
// while and thaws them — `vmshadow vm freeze`, a diagnostic for guest freeze hooks and for
// the thaw guardian, bounded like every vmshadow freeze (virt/freeze_guard.h).
// Also the entry point of the thaw guardian process itself.

#include <chrono>
#include <string>

#include "common/error.h"
#include "common/task.h"
#include "virt/thaw_guardian.h"

namespace vmshadow::engine {

struct FreezeHoldRequest {
    std::string connect_uri;
    std::string vm;
    std::chrono::milliseconds hold{0};
    std::chrono::milliseconds thaw_deadline{10000};
    // A cancel (Ctrl-C) ends the hold early: the guest is thawed at once. nullptr: none.
    const CancelToken* cancel = nullptr;
};

struct FreezeHoldReport {
    int frozen = 0;
    int thawed = 0;
    std::chrono::milliseconds freeze_call{0};
    std::chrono::milliseconds window{0};
};

// Fails with `timeout` when the guardian thawed the guest before we did (hold too long).
Result<FreezeHoldReport> hold_freeze(const FreezeHoldRequest& request);

// Runs the thaw guardian protocol in this process (the hidden `__thaw-guardian` command).
int run_thaw_guardian_process(const virt::GuardianSpec& spec);

}  // namespace vmshadow::engine
