// SPDX-License-Identifier: MIT
#include "virt/freeze_guard.h"

#include <utility>

#include "virt/libvirt_error.h"

namespace vmshadow::virt {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

GuardianSpec spec_for(const Domain& domain, const FreezeSettings& s, GuardianAction action,
                      milliseconds release_after) {
    GuardianSpec spec;
    spec.executable = s.guardian_executable;
    spec.connect_uri = s.connect_uri;
    spec.domain_uuid = domain.uuid();
    spec.domain_name = domain.name();
    spec.action = action;
    spec.arm_timeout = duration_cast<milliseconds>(s.freeze_timeout) + release_after;
    spec.release_after = release_after;
    return spec;
}

// The agent did not answer the freeze in time: most likely the guest's freeze hook is still
// running inside it, and the freeze lands when the hook returns. A thaw sent now would wait
// behind it, so none is sent from here: dropping the guard hands the guest to the guardian,
// which thaws until the agent reports "thawed" (thaw_guardian.h).
Error slow_freeze(const Domain& domain, const FreezeSettings& s, pid_t guardian) {
    return Error(ErrorKind::timeout,
                 domain.label() + ": the guest agent's freeze did not return within " +
                     std::to_string(s.freeze_timeout.count()) +
                     " s (--freeze-timeout): the guest's freeze hook may be slow or hung, and "
                     "the freeze may still land when it returns; the thaw guardian (pid " +
                     std::to_string(guardian) +
                     ") thaws the guest and keeps checking until its agent reports it thawed "
                     "(for up to " +
                     std::to_string(kGuardianSettleLimit.count()) + " min)");
}

}  // namespace

Result<FreezeGuard> FreezeGuard::freeze(const Domain& domain, const FreezeSettings& settings) {
    // A silent agent is found in seconds here, before anything needs undoing, instead of
    // after the long freeze timeout that leaves room for the guest's freeze hooks.
    if (auto ping = GuestAgent(domain, settings.thaw_timeout).ping(); !ping)
        return fail(ping.error());
    auto guardian = ThawGuardian::start(
        spec_for(domain, settings, GuardianAction::thaw, settings.thaw_deadline));
    if (!guardian) return fail(guardian.error());
    FreezeGuard guard(domain, settings, std::move(*guardian));

    // One agent response timeout for the freeze and its thaw, set before the freeze: the
    // window (freeze returned → thaw returned) then holds no call but the thaw itself.
    GuestAgent agent(domain, settings.freeze_timeout);
    auto hold = agent.hold_timeout();
    if (!hold || !guard.guardian_->alive()) {
        guard.done_ = true;  // nothing was frozen
        (void)guard.guardian_->released();
        if (!hold) return fail(hold.error());
        return fail(ErrorKind::unavailable,
                    domain.label() +
                        ": the thaw guardian exited before the freeze, so the "
                        "guest was not frozen");
    }
    guard.hold_.emplace(std::move(*hold));
    auto start = Clock::now();
    auto frozen = agent.freeze(*guard.hold_);
    guard.frozen_at_ = Clock::now();
    guard.guardian_->armed(guard.frozen_at_);
    guard.freeze_call_ = duration_cast<milliseconds>(guard.frozen_at_ - start);
    if (!frozen) {
        guard.hold_.reset();
        guard.done_ = true;
        if (guard.freeze_call_ + milliseconds(1000) >= settings.freeze_timeout &&
            (frozen.error().kind() == ErrorKind::unavailable ||
             frozen.error().kind() == ErrorKind::timeout)) {
            return fail(slow_freeze(domain, settings, guard.guardian_->pid()));
        }
        // The freeze may have completed in the guest even though the call failed: thaw now;
        // if that fails too, dropping the guard leaves it to the guardian.
        agent.set_timeout(settings.thaw_timeout);
        if (agent.thaw()) (void)guard.guardian_->released();
        return fail(frozen.error());
    }
    guard.frozen_ = *frozen;
    return guard;
}

Result<ThawReport> FreezeGuard::thaw() {
    if (done_) return fail(ErrorKind::internal, domain_->label() + ": thawed twice");
    // The freeze's timeout hold bounds the thaw too; only after it do the guardian's release
    // and libvirt's default timeout follow, outside the window.
    GuestAgent agent(*domain_, hold_ ? settings_.freeze_timeout : settings_.thaw_timeout);
    auto thawed = hold_ ? agent.thaw(*hold_) : agent.thaw();
    const auto thawed_at = Clock::now();
    if (!thawed) return fail(thawed.error());  // the guardian keeps trying
    done_ = true;
    ThawReport report;
    report.frozen = frozen_;
    report.thawed = *thawed;
    report.window = duration_cast<milliseconds>(thawed_at - frozen_at_);
    (void)guardian_->released();
    hold_.reset();
    return report;
}

// A moved-from guard owns nothing and must not thaw.
FreezeGuard::FreezeGuard(FreezeGuard&& other) noexcept
    : domain_(other.domain_),
      settings_(std::move(other.settings_)),
      guardian_(std::move(other.guardian_)),
      hold_(std::move(other.hold_)),
      frozen_(other.frozen_),
      freeze_call_(other.freeze_call_),
      frozen_at_(other.frozen_at_),
      done_(std::exchange(other.done_, true)) {
    other.guardian_.reset();
    other.hold_.reset();
}

FreezeGuard::~FreezeGuard() {
    if (!done_ && guardian_) (void)thaw();
}

Result<PauseGuard> PauseGuard::pause(const Domain& domain, const FreezeSettings& settings,
                                     milliseconds resume_deadline) {
    auto guardian =
        ThawGuardian::start(spec_for(domain, settings, GuardianAction::resume, resume_deadline));
    if (!guardian) return fail(guardian.error());
    PauseGuard guard(domain, std::move(*guardian));
    if (!guard.guardian_->alive()) {
        guard.done_ = true;
        return fail(ErrorKind::unavailable, domain.label() +
                                                ": the thaw guardian exited before the pause, so "
                                                "the VM was not paused");
    }
    if (virDomainSuspend(domain.raw()) < 0) {
        guard.done_ = true;
        (void)guard.guardian_->released();
        return fail(libvirt_error(domain.label() + ": pause"));
    }
    guard.paused_at_ = Clock::now();
    guard.guardian_->armed(guard.paused_at_);
    return guard;
}

Result<milliseconds> PauseGuard::resume() {
    if (done_) return fail(ErrorKind::internal, domain_->label() + ": resumed twice");
    if (virDomainResume(domain_->raw()) < 0) {
        return fail(libvirt_error(domain_->label() + ": resume"));
    }
    done_ = true;
    (void)guardian_->released();
    return duration_cast<milliseconds>(Clock::now() - paused_at_);
}

PauseGuard::PauseGuard(PauseGuard&& other) noexcept
    : domain_(other.domain_),
      guardian_(std::move(other.guardian_)),
      paused_at_(other.paused_at_),
      done_(std::exchange(other.done_, true)) {
    other.guardian_.reset();
}

PauseGuard::~PauseGuard() {
    if (!done_ && guardian_) (void)resume();
}

}  // namespace vmshadow::virt
