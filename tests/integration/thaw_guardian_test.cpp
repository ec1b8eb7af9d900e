// SPDX-License-Identifier: MIT
// The thaw guardian on real guests: a frozen guest is thawed when vmshadow's whole process
// group is SIGKILLed, and when vmshadow holds the freeze past the deadline.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "integration/cli_runner.h"
#include "lab/lab_guest.h"
#include "virt/guest_agent.h"

namespace vmshadow {
namespace {

using lab::LabGuest;
using ::testing::HasSubstr;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ThawGuardian : public ::testing::Test {
  protected:
    void boot(std::string_view test, lab::GuestOptions options = {.workload = true}) {
        auto g = LabGuest::create(options, test);
        ASSERT_TRUE(g) << g.error().message();
        guest_.emplace(std::move(*g));
        ASSERT_TRUE(guest_->start());
        auto up = options.agent == lab::AgentMode::hang
                      ? guest_->wait_for_serial("lab: agent stopped")
                      : guest_->wait_for_agent();
        ASSERT_TRUE(up) << up.error().message();
    }

    // Polls the agent's freeze status until it is `want` or `timeout` passes.
    bool wait_status(virt::FreezeStatus want, std::chrono::milliseconds timeout) {
        virt::GuestAgent agent(guest_->domain(), 3s);
        auto deadline = Clock::now() + timeout;
        while (Clock::now() < deadline) {
            auto s = agent.freeze_status();
            if (s && *s == want) return true;
            std::this_thread::sleep_for(200ms);
        }
        return false;
    }

    std::optional<LabGuest> guest_;
};

TEST_F(ThawGuardian, GuestIsThawedWhenVmshadowProcessGroupIsKilled) {
    boot("guardian-kill");
    // Read before freezing: a frozen agent refuses file reads.
    auto row_before = guest_->last_committed_row();
    ASSERT_TRUE(row_before) << row_before.error().message();
    // A long hold and a long deadline: only vmshadow's death can end this freeze early.
    // vmshadow's own output, shown when the freeze never shows up (removed either way).
    struct Log {
        std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("vmshadow-guardian-kill-" + std::to_string(::getpid()) + "-" +
                                      std::to_string(Clock::now().time_since_epoch().count()));
        ~Log() { std::filesystem::remove(path); }
        std::string text() const {
            std::ifstream in(path);
            return {std::istreambuf_iterator<char>(in), {}};
        }
    } log;
    pid_t pid = testing::start_vmshadow_in_own_group(
        {"vm", "freeze", guest_->name(), "--hold", "120", "--thaw-deadline", "120"},
        log.path.string());
    ASSERT_GT(pid, 0);
    struct Reaper {  // never leave the group running when an assertion ends the test
        pid_t pid;
        ~Reaper() {
            if (::kill(-pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
        }
    } reaper{pid};
    ASSERT_TRUE(wait_status(virt::FreezeStatus::frozen, 60s))
        << "vmshadow: " << log.text() << "\nserial: " << guest_->serial_output();

    ASSERT_EQ(::kill(-pid, SIGKILL), 0);
    ::waitpid(pid, nullptr, 0);
    auto killed_at = Clock::now();
    ASSERT_TRUE(wait_status(virt::FreezeStatus::thawed, 30s))
        << "the guest stayed frozen after vmshadow was killed";
    EXPECT_LT(Clock::now() - killed_at, 60s);

    // The guest's writer was released by the thaw hook and commits again.
    auto deadline = Clock::now() + 60s;
    std::int64_t row = *row_before;
    while (Clock::now() < deadline && row <= *row_before) {
        std::this_thread::sleep_for(500ms);
        auto r = guest_->last_committed_row();
        if (r) row = *r;
    }
    EXPECT_GT(row, *row_before);
}

TEST_F(ThawGuardian, GuardianThawsAtTheDeadlineWhenTheFreezeIsHeldTooLong) {
    boot("guardian-deadline", {});
    auto run = testing::run_vmshadow(
        {"vm", "freeze", guest_->name(), "--hold", "8", "--thaw-deadline", "2"});
    EXPECT_EQ(run.exit_code, 5) << run.err;
    EXPECT_THAT(run.err, HasSubstr("thaw guardian thawed the guest"));
    EXPECT_TRUE(wait_status(virt::FreezeStatus::thawed, 5s));
}

TEST_F(ThawGuardian, FreezeRunsTheGuestHookAndReportsTheWindow) {
    boot("guardian-ok");
    auto run = testing::run_vmshadow({"vm", "freeze", guest_->name(), "--json"});
    ASSERT_EQ(run.exit_code, 0) << run.err;
    auto doc = nlohmann::json::parse(run.out);
    EXPECT_GE(doc["frozen"].get<int>(), 1);
    EXPECT_EQ(doc["thawed"], doc["frozen"]);
    EXPECT_GE(doc["freeze_ms"].get<int>(), 0);
    auto events = guest_->read_file("/run/lab/events");
    ASSERT_TRUE(events) << events.error().message();
    EXPECT_THAT(*events, HasSubstr("paused"));
    EXPECT_THAT(*events, HasSubstr("resumed"));
    EXPECT_TRUE(wait_status(virt::FreezeStatus::thawed, 5s));
}

TEST_F(ThawGuardian, FreezeOfHungAgentFailsWithinItsTimeout) {
    boot("guardian-hung", {.agent = lab::AgentMode::hang});
    auto start = Clock::now();
    auto run = testing::run_vmshadow({"vm", "freeze", guest_->name()});
    EXPECT_EQ(run.exit_code, 4) << run.err;
    EXPECT_THAT(run.err, HasSubstr("guest agent"));
    EXPECT_LT(Clock::now() - start, 120s);
}

}  // namespace
}  // namespace vmshadow
