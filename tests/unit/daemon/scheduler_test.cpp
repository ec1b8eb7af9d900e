// SPDX-License-Identifier: MIT
// Scheduler and RunQueue with an injected clock: catch-up after downtime or a clock jump
// (exactly one run by default, never two), new jobs wait for their first slot, a clock that
// goes back repeats nothing; tasks wait instead of overlapping on a VM or repository.
#include "daemon/scheduler.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <time.h>

namespace vmshadow::daemon {
namespace {

using namespace std::chrono_literals;

// Every test runs in UTC, whatever the host's zone.
class UtcZone : public ::testing::Test {
  protected:
    void SetUp() override {
        const char* tz = std::getenv("TZ");
        if (tz) saved_ = tz;
        had_ = tz != nullptr;
        ::setenv("TZ", "UTC", 1);
        ::tzset();
    }
    void TearDown() override {
        if (had_) {
            ::setenv("TZ", saved_.c_str(), 1);
        } else {
            ::unsetenv("TZ");
        }
        ::tzset();
    }
    std::string saved_;
    bool had_ = false;
};

Clock::time_point at(std::int64_t unix_s) {
    return Clock::time_point(std::chrono::seconds(unix_s));
}

// 2026-12-07 00:00:00 UTC
constexpr std::int64_t kMidnight = 1796601600;

JobSpec daily_job(CatchUp catch_up = CatchUp::one) {
    JobSpec job;
    job.id = "nightly";
    job.schedule = "*-*-* 02:00:00";
    job.repository = "main";
    job.vms = {"web1"};
    job.catch_up = catch_up;
    return job;
}

using SchedulerTest = UtcZone;

TEST_F(SchedulerTest, ANewJobWaitsForItsFirstSlot) {
    ManualClock clock(at(kMidnight + 5 * 3600));
    auto d = decide_runs({daily_job()}, {}, clock.now());
    EXPECT_TRUE(d.runs.empty());
    ASSERT_TRUE(d.last_slots.count("nightly"));
    EXPECT_EQ(d.last_slots["nightly"], kMidnight + 5 * 3600);
    ASSERT_TRUE(d.next_wake);
    EXPECT_EQ(*d.next_wake, at(kMidnight + 86400 + 2 * 3600));
}

TEST_F(SchedulerTest, ASlotThatJustElapsedIsOneOrdinaryRun) {
    std::map<std::string, std::int64_t> last{{"nightly", kMidnight}};
    auto d = decide_runs({daily_job()}, last, at(kMidnight + 2 * 3600 + 1));
    ASSERT_EQ(d.runs.size(), 1u);
    EXPECT_FALSE(d.runs[0].catch_up);
    EXPECT_EQ(d.runs[0].slot, at(kMidnight + 2 * 3600));
    EXPECT_EQ(d.last_slots["nightly"], kMidnight + 2 * 3600);
}

TEST_F(SchedulerTest, AThreeDayJumpCatchesUpExactlyOnceAndNeverTwice) {
    ManualClock clock(at(kMidnight));
    std::map<std::string, std::int64_t> last{{"nightly", kMidnight}};
    clock.advance(std::chrono::hours(24 * 3 + 5));
    auto d = decide_runs({daily_job()}, last, clock.now());
    ASSERT_EQ(d.runs.size(), 1u);
    EXPECT_TRUE(d.runs[0].catch_up);
    for (const auto& [job, slot] : d.last_slots) last[job] = slot;
    // The same instant again, and a little later: nothing more until the next slot.
    EXPECT_TRUE(decide_runs({daily_job()}, last, clock.now()).runs.empty());
    clock.advance(1h);
    EXPECT_TRUE(decide_runs({daily_job()}, last, clock.now()).runs.empty());
    // The next slot is an ordinary run again.
    clock.set(at(kMidnight + 4 * 86400 + 2 * 3600));
    auto next = decide_runs({daily_job()}, last, clock.now());
    ASSERT_EQ(next.runs.size(), 1u);
    EXPECT_FALSE(next.runs[0].catch_up);
}

TEST_F(SchedulerTest, CatchUpAllRunsOncePerMissedSlotAndNoneRunsNothing) {
    std::map<std::string, std::int64_t> last{{"nightly", kMidnight}};
    auto now = at(kMidnight + 3 * 86400 + 5 * 3600);  // slots on days 0, 1, 2 and 3 missed
    EXPECT_EQ(decide_runs({daily_job(CatchUp::all)}, last, now).runs.size(), 4u);
    auto none = decide_runs({daily_job(CatchUp::none)}, last, now);
    EXPECT_TRUE(none.runs.empty());
    EXPECT_EQ(none.last_slots["nightly"], kMidnight + 3 * 86400 + 2 * 3600);
}

TEST_F(SchedulerTest, CatchUpAllIsBounded) {
    JobSpec job = daily_job(CatchUp::all);
    job.schedule = "*:*:0/20";
    std::map<std::string, std::int64_t> last{{"nightly", kMidnight}};
    auto d = decide_runs({job}, last, at(kMidnight + 86400));  // 4320 slots missed
    EXPECT_EQ(d.runs.size(), SchedulerOptions{}.max_catch_up_runs);
}

TEST_F(SchedulerTest, AClockThatGoesBackRepeatsNoSlot) {
    std::map<std::string, std::int64_t> last{{"nightly", kMidnight + 2 * 3600}};
    auto d = decide_runs({daily_job()}, last, at(kMidnight + 3600));
    EXPECT_TRUE(d.runs.empty());
    EXPECT_FALSE(d.last_slots.count("nightly"));  // unchanged
}

TEST_F(SchedulerTest, DisabledAndUnscheduledJobsNeverRun) {
    JobSpec off = daily_job();
    off.enabled = false;
    JobSpec manual = daily_job();
    manual.id = "manual";
    manual.schedule = "";
    std::map<std::string, std::int64_t> last{{"nightly", kMidnight}, {"manual", kMidnight}};
    auto d = decide_runs({off, manual}, last, at(kMidnight + 86400 * 2));
    EXPECT_TRUE(d.runs.empty());
    EXPECT_FALSE(next_run(off, at(kMidnight)));
    EXPECT_FALSE(next_run(manual, at(kMidnight)));
}

QueuedTask backup(std::int64_t id, std::string job, std::string vm, std::string repo = "main") {
    return QueuedTask{id, std::move(job), true, {std::move(vm)}, std::move(repo), false};
}

TEST(RunQueueTest, TwoJobsOnOneVmNeverOverlap) {
    RunQueue q(4, 4);
    ASSERT_TRUE(q.push(backup(1, "a", "web1")));
    ASSERT_TRUE(q.push(backup(2, "b", "web1")));
    auto started = q.start_ready();
    ASSERT_EQ(started.size(), 1u);
    EXPECT_EQ(started[0].id, 1);
    EXPECT_TRUE(q.start_ready().empty());
    EXPECT_EQ(q.waiting(), 1u);
    q.finished(1);
    started = q.start_ready();
    ASSERT_EQ(started.size(), 1u);
    EXPECT_EQ(started[0].id, 2);
}

TEST(RunQueueTest, TheGlobalBackupLimitHoldsOtherVmsBack) {
    RunQueue q(1, 4);
    q.push(backup(1, "a", "web1"));
    q.push(backup(2, "b", "web2"));
    EXPECT_EQ(q.start_ready().size(), 1u);
    q.set_limits(2, 4);
    EXPECT_EQ(q.start_ready().size(), 1u);
}

TEST(RunQueueTest, PruneTakesItsRepositoryAlone) {
    RunQueue q(4, 4);
    q.push(backup(1, "a", "web1"));
    q.push(QueuedTask{2, "prune", false, {}, "main", true});
    q.push(backup(3, "c", "web3"));
    auto started = q.start_ready();
    // The prune waits for the backup; the later backup on the same repository does not
    // overtake the waiting prune.
    ASSERT_EQ(started.size(), 1u);
    EXPECT_EQ(started[0].id, 1);
    q.finished(1);
    started = q.start_ready();
    ASSERT_EQ(started.size(), 1u);
    EXPECT_EQ(started[0].id, 2);
    q.finished(2);
    EXPECT_EQ(q.start_ready().size(), 1u);
}

TEST(RunQueueTest, AJobHasAtMostOneWaitingRun) {
    RunQueue q(1, 4);
    q.push(backup(1, "a", "web1"));
    q.start_ready();
    EXPECT_TRUE(q.push(backup(2, "a", "web1")));   // waits behind the running one
    EXPECT_FALSE(q.push(backup(3, "a", "web1")));  // joins the waiting one
    EXPECT_TRUE(q.running_job("a"));
    EXPECT_TRUE(q.waiting_for_job("a"));
    EXPECT_TRUE(q.remove_waiting(2));
    EXPECT_FALSE(q.remove_waiting(2));
}

}  // namespace
}  // namespace vmshadow::daemon
