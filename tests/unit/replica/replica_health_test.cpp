// SPDX-License-Identifier: MIT
// Replica health from a cycle history at a chosen instant: Hyper-V's rules.
#include "replica/replica_health.h"

#include <gtest/gtest.h>

namespace vmshadow::replica {
namespace {

using namespace std::chrono_literals;
using Res = CycleRecord::Result;

const Clock::time_point kNow = Clock::time_point{} + std::chrono::hours(24 * 365 * 56);

// A cycle started `ago` before kNow; an ok one committed a point read at its start.
CycleRecord cycle(std::chrono::seconds ago, Res result, double seconds = 10,
                  std::uint64_t bytes = 1000) {
    CycleRecord c{kNow - ago, seconds, bytes, result, std::nullopt};
    if (result == Res::ok) c.point_time = c.started;
    if (result == Res::missed) c.seconds = 0, c.bytes_sent = 0;
    return c;
}

// Cycles every 5 minutes over the last hour, newest last; `bad` of them (the oldest) as `how`.
HealthInput hour_of_cycles(unsigned count, unsigned bad, Res how) {
    HealthInput in{"normal", {}, 300s};
    for (unsigned i = 0; i < count; ++i) {
        auto ago = std::chrono::seconds(300 * (count - i));
        in.cycles.push_back(cycle(ago, i < bad ? how : Res::ok));
    }
    return in;
}

TEST(ReplicaHealth, AllCyclesSucceededIsNormalWithRpoAndTotals) {
    HealthInput in = hour_of_cycles(12, 0, Res::ok);
    in.cycles.back().seconds = 40;
    Health h = compute_health(in, kNow);
    EXPECT_EQ(h.state, "normal");
    ASSERT_TRUE(h.rpo_s);
    EXPECT_DOUBLE_EQ(*h.rpo_s, 300);  // the newest point was read 5 minutes ago
    ASSERT_TRUE(h.last_success);
    EXPECT_EQ(*h.last_success, kNow - 300s + 40s);
    EXPECT_DOUBLE_EQ(h.max_cycle_s, 40);
    EXPECT_DOUBLE_EQ(h.avg_cycle_s, (11 * 10 + 40) / 12.0);
    EXPECT_EQ(h.bytes_sent, 12000u);
    EXPECT_EQ(h.cycles_last_hour, 12u);
    EXPECT_EQ(h.missed_last_hour, 0u);
    EXPECT_TRUE(h.reason.empty());
}

TEST(ReplicaHealth, MoreThanTwentyPercentMissedIsAWarning) {
    Health h = compute_health(hour_of_cycles(10, 3, Res::missed), kNow);
    EXPECT_EQ(h.state, "warning");
    EXPECT_EQ(h.missed_last_hour, 3u);
    EXPECT_EQ(h.missed_total, 3u);
    EXPECT_NE(h.reason.find("3 of the last hour's 10"), std::string::npos) << h.reason;
    // Missed cycles are not timed.
    EXPECT_DOUBLE_EQ(h.avg_cycle_s, 10);
}

TEST(ReplicaHealth, ExactlyTwentyPercentMissedIsStillNormal) {
    EXPECT_EQ(compute_health(hour_of_cycles(10, 2, Res::missed), kNow).state, "normal");
}

TEST(ReplicaHealth, FailedCyclesCountAsMissedForTheWarning) {
    Health h = compute_health(hour_of_cycles(10, 3, Res::failed), kNow);
    EXPECT_EQ(h.state, "warning");
    EXPECT_EQ(h.missed_last_hour, 3u);
}

TEST(ReplicaHealth, NoSuccessForAnHourIsAWarning) {
    HealthInput in{"normal", {cycle(90min, Res::ok)}, 300s};
    Health h = compute_health(in, kNow);
    EXPECT_EQ(h.state, "warning");
    EXPECT_NE(h.reason.find("no cycle succeeded for an hour"), std::string::npos) << h.reason;
    ASSERT_TRUE(h.rpo_s);
    EXPECT_DOUBLE_EQ(*h.rpo_s, 90 * 60);
}

TEST(ReplicaHealth, MissesCountFromTheFirstCycleAndNoHistoryIsNormal) {
    HealthInput in{"normal", {cycle(10min, Res::missed), cycle(5min, Res::ok)}, 300s};
    // One missed of two is above 20 %: the rule on misses applies from the start.
    EXPECT_EQ(compute_health(in, kNow).state, "warning");
    in.cycles = {cycle(20min, Res::ok), cycle(15min, Res::ok), cycle(10min, Res::ok),
                 cycle(5min, Res::ok)};
    EXPECT_EQ(compute_health(in, kNow).state, "normal");
    in.cycles = {};
    Health empty = compute_health(in, kNow);
    EXPECT_EQ(empty.state, "normal");
    EXPECT_FALSE(empty.rpo_s);
}

TEST(ReplicaHealth, LastFailedWithoutSuccessInTheHourIsCritical) {
    HealthInput in{
        "normal", {cycle(2h, Res::ok), cycle(30min, Res::failed), cycle(5min, Res::failed)}, 300s};
    Health h = compute_health(in, kNow);
    EXPECT_EQ(h.state, "critical");
    EXPECT_NE(h.reason.find("no cycle succeeded in the last hour"), std::string::npos) << h.reason;
    ASSERT_TRUE(h.rpo_s);
    EXPECT_DOUBLE_EQ(*h.rpo_s, 2 * 3600);
}

TEST(ReplicaHealth, NeverSucceededAndLastFailedIsCritical) {
    HealthInput in{"normal", {cycle(5min, Res::failed)}, 300s};
    Health h = compute_health(in, kNow);
    EXPECT_EQ(h.state, "critical");
    EXPECT_FALSE(h.rpo_s);
    EXPECT_NE(h.reason.find("no cycle has succeeded"), std::string::npos) << h.reason;
}

TEST(ReplicaHealth, AFailedLastCycleAfterRecentSuccessIsAWarningUntilOneSucceeds) {
    HealthInput in = hour_of_cycles(12, 0, Res::ok);
    in.cycles.push_back(cycle(1min, Res::failed));
    Health h = compute_health(in, kNow);
    EXPECT_EQ(h.state, "warning");  // not critical: a cycle succeeded within the hour
    EXPECT_NE(h.reason.find("last cycle failed"), std::string::npos) << h.reason;
    in.cycles.push_back(cycle(30s, Res::ok));
    EXPECT_EQ(compute_health(in, kNow).state, "normal");  // 1 of 14 failed: under 20 %
}

TEST(ReplicaHealth, LinkStatesPassThroughWithTheirRpo) {
    for (std::string state :
         {"paused", "resync-required", "failed-over", "initial", "test-failover"}) {
        HealthInput in = hour_of_cycles(10, 5, Res::failed);
        in.link_state = state;
        Health h = compute_health(in, kNow);
        EXPECT_EQ(h.state, state);
        ASSERT_TRUE(h.rpo_s);
        EXPECT_DOUBLE_EQ(*h.rpo_s, 300);
    }
}

TEST(ReplicaHealth, RpoFollowsTheNewestPointNotTheLastCycle) {
    HealthInput in{"normal", {cycle(20min, Res::ok), cycle(3min, Res::ok)}, 300s};
    in.cycles.back().point_time = kNow - 25min;  // an older point committed last
    Health h = compute_health(in, kNow);
    ASSERT_TRUE(h.rpo_s);
    EXPECT_DOUBLE_EQ(*h.rpo_s, 20 * 60);
}

TEST(ReplicaHealth, TrimKeepsADayAndAtMost4096Records) {
    std::deque<CycleRecord> cycles;
    cycles.push_back(cycle(25h, Res::ok));
    for (int i = 0; i < 5000; ++i) cycles.push_back(cycle(std::chrono::seconds(5000 - i), Res::ok));
    trim_history(cycles, kNow);
    EXPECT_EQ(cycles.size(), 4096u);
    EXPECT_EQ(cycles.back().started, kNow - 1s);
    EXPECT_EQ(cycles.front().started, kNow - 4096s);
}

}  // namespace
}  // namespace vmshadow::replica
