// SPDX-License-Identifier: MIT
// PauseGuard and FreezeGuard used directly, as the backup engine will: the guardian resumes
// a paused VM at its deadline, and a guard dropped without an explicit thaw still thaws.
#include <gtest/gtest.h>

#include <thread>

#include "lab/lab_guest.h"
#include "virt/freeze_guard.h"

namespace vmshadow {
namespace {

using lab::LabGuest;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

virt::FreezeSettings settings_for(const LabGuest& guest) {
    virt::FreezeSettings s;
    s.guardian_executable = VMSHADOW_BINARY;  // this test binary is not vmshadow
    s.connect_uri = guest.connection().uri();
    return s;
}

LabGuest booted(std::string_view test) {
    auto guest = LabGuest::create({}, test);
    if (!guest) throw std::runtime_error(guest.error().message());
    if (auto s = guest->start(); !s) throw std::runtime_error(s.error().message());
    if (auto s = guest->wait_for_agent(); !s) throw std::runtime_error(s.error().message());
    return std::move(*guest);
}

bool wait_state(const virt::Domain& d, virt::DomainState want, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        auto s = d.state();
        if (s && *s == want) return true;
        std::this_thread::sleep_for(100ms);
    }
    return false;
}

TEST(PauseGuard, GuardianResumesThePausedVmAtTheDeadline) {
    auto guest = booted("pause-deadline");
    auto guard = virt::PauseGuard::pause(guest.domain(), settings_for(guest), 1500ms);
    ASSERT_TRUE(guard) << guard.error().message();
    EXPECT_TRUE(wait_state(guest.domain(), virt::DomainState::paused, 1s));
    // Not resumed by us: the guardian must do it.
    EXPECT_TRUE(wait_state(guest.domain(), virt::DomainState::running, 30s));
    auto resumed = guard->resume();
    EXPECT_FALSE(resumed) << "resuming a VM the guardian already resumed must be reported";
}

TEST(PauseGuard, ResumeReportsHowLongTheVmWasPaused) {
    auto guest = booted("pause-ok");
    auto guard = virt::PauseGuard::pause(guest.domain(), settings_for(guest), 10s);
    ASSERT_TRUE(guard) << guard.error().message();
    std::this_thread::sleep_for(200ms);
    auto paused_for = guard->resume();
    ASSERT_TRUE(paused_for) << paused_for.error().message();
    EXPECT_GE(*paused_for, 200ms);
    EXPECT_TRUE(wait_state(guest.domain(), virt::DomainState::running, 1s));
}

TEST(FreezeGuard, DroppedGuardThawsTheGuest) {
    auto guest = booted("freeze-drop");
    {
        auto guard = virt::FreezeGuard::freeze(guest.domain(), settings_for(guest));
        ASSERT_TRUE(guard) << guard.error().message();
        EXPECT_GE(guard->frozen_count(), 1);
    }
    virt::GuestAgent agent(guest.domain(), 5s);
    auto status = agent.freeze_status();
    ASSERT_TRUE(status) << status.error().message();
    EXPECT_EQ(*status, virt::FreezeStatus::thawed);
}

TEST(FreezeGuard, ThawReportsTheWindowAndAllFilesystems) {
    auto guest = booted("freeze-window");
    auto guard = virt::FreezeGuard::freeze(guest.domain(), settings_for(guest));
    ASSERT_TRUE(guard) << guard.error().message();
    auto report = guard->thaw();
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_EQ(report->thawed, report->frozen);
    EXPECT_FALSE(report->window_broken());
    EXPECT_LT(report->window, 10s);
}

}  // namespace
}  // namespace vmshadow
