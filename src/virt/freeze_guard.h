// SPDX-License-Identifier: MIT
#pragma once
// FreezeGuard: an agent freeze of one guest that is always undone.
//
// freeze() starts a thaw guardian (thaw_guardian.h) *before* freezing, so that from the
// moment the guest may be frozen something outside this process will thaw it: if this
// process dies, at once; if it lives but does not thaw within `thaw_deadline` of the freeze
// returning (10 s by default: the limit VSS gives a Windows guest), at that deadline.
// A failed or timed-out freeze is followed by a thaw, since the guest may have frozen anyway.
// thaw() thaws and reports how many filesystems it thawed: fewer than were frozen means the
// guardian (or someone else) thawed first and the freeze window was broken. The destructor
// thaws a guard that was not thawed explicitly.
//
// The freeze window — from the agent's freeze returning to its thaw returning — holds nothing
// of this class but the thaw call: the agent response timeout is set once before the freeze
// for the pair (`freeze_timeout` bounds the thaw too), the guardian is armed by a store into
// shared memory, and its release and libvirt's default timeout come after the thaw returned.
//
// PauseGuard is the same for pausing a VM's vCPUs (saved-state and group crash captures).

#include <chrono>
#include <optional>
#include <string>

#include "common/error.h"
#include "virt/domain.h"
#include "virt/guest_agent.h"
#include "virt/thaw_guardian.h"

namespace vmshadow::virt {

struct FreezeSettings {
    std::string guardian_executable = current_executable();
    std::string connect_uri;                         // for the guardian's own connection
    std::chrono::milliseconds thaw_deadline{10000};  // freeze returned → guardian thaws
    std::chrono::seconds freeze_timeout{30};  // the freeze call (guest hooks included) and its thaw
    std::chrono::seconds thaw_timeout{5};     // ping; the thaw after a failed freeze
};

struct ThawReport {
    int frozen = 0;                       // filesystems the freeze reported
    int thawed = 0;                       // filesystems this thaw thawed
    std::chrono::milliseconds window{0};  // freeze returned → thaw returned
    bool window_broken() const { return thawed < frozen; }
};

class FreezeGuard {
  public:
    using Clock = std::chrono::steady_clock;

    static Result<FreezeGuard> freeze(const Domain& domain, const FreezeSettings& settings);

    int frozen_count() const { return frozen_; }
    // How long the agent's freeze call took (the guest's freeze hooks run inside it).
    std::chrono::milliseconds freeze_call() const { return freeze_call_; }
    Clock::time_point frozen_at() const { return frozen_at_; }

    Result<ThawReport> thaw();

    FreezeGuard(FreezeGuard&& other) noexcept;
    FreezeGuard& operator=(FreezeGuard&&) noexcept = delete;
    ~FreezeGuard();

  private:
    FreezeGuard(const Domain& domain, const FreezeSettings& settings, ThawGuardian guardian)
        : domain_(&domain), settings_(settings), guardian_(std::move(guardian)) {}

    const Domain* domain_;
    FreezeSettings settings_;
    std::optional<ThawGuardian> guardian_;
    std::optional<GuestAgent::TimeoutHold> hold_;  // the freeze/thaw pair's agent timeout
    int frozen_ = 0;
    std::chrono::milliseconds freeze_call_{0};
    Clock::time_point frozen_at_{};
    bool done_ = false;
};

class PauseGuard {
  public:
    using Clock = std::chrono::steady_clock;

    // Pauses the VM's vCPUs; a guardian resumes it `resume_deadline` later at the latest.
    static Result<PauseGuard> pause(const Domain& domain, const FreezeSettings& settings,
                                    std::chrono::milliseconds resume_deadline);
    // Resumes; returns how long the VM was paused.
    Result<std::chrono::milliseconds> resume();

    PauseGuard(PauseGuard&& other) noexcept;
    PauseGuard& operator=(PauseGuard&&) noexcept = delete;
    ~PauseGuard();

  private:
    PauseGuard(const Domain& domain, ThawGuardian guardian)
        : domain_(&domain), guardian_(std::move(guardian)) {}

    const Domain* domain_;
    std::optional<ThawGuardian> guardian_;
    Clock::time_point paused_at_{};
    bool done_ = false;
};

}  // namespace vmshadow::virt
