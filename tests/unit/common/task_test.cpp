// SPDX-License-Identifier: MIT
#include "common/task.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace vmshadow {
namespace {

using namespace std::chrono_literals;

struct RecordingProgress : ProgressSink {
    std::vector<Progress> updates;
    void update(const Progress& p) override { updates.push_back(p); }
};

struct RecordingLog : LogSink {
    std::vector<std::pair<LogLevel, std::string>> lines;
    void write(LogLevel level, std::string_view line) override {
        lines.emplace_back(level, std::string(line));
    }
};

TEST(CancelToken, CopiesShareOneFlag) {
    CancelToken token;
    CancelToken copy = token;
    EXPECT_TRUE(token.check("backup"));
    copy.request();
    EXPECT_TRUE(token.requested());
    auto status = token.check("backup of web1");
    ASSERT_FALSE(status);
    EXPECT_EQ(status.error().kind(), ErrorKind::cancelled);
    EXPECT_EQ(status.error().message(), "backup of web1: cancelled");
}

TEST(CancelToken, SleepWakesEarlyOnRequest) {
    CancelToken token;
    std::thread canceller([token] {
        std::this_thread::sleep_for(20ms);
        token.request();
    });
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(token.sleep_for(60s));
    canceller.join();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
}

TEST(CancelToken, SleepRunsOutWhenNotCancelled) {
    CancelToken token;
    EXPECT_FALSE(token.sleep_for(1ms));
}

TEST(TaskContext, PhaseRestartsCountsAndBytesNeverGoBack) {
    RecordingProgress progress;
    TaskContext task(&progress, nullptr, CancelToken{}, system_clock());
    task.phase("copy", 1000);
    task.bytes_done(400);
    task.bytes_done(300);  // an older report from a slower worker
    task.add_bytes(100);
    EXPECT_EQ(task.snapshot().bytes_done, 500u);
    task.phase("commit");
    EXPECT_EQ(task.snapshot().bytes_done, 0u);
    EXPECT_EQ(task.snapshot().phase, "commit");
    ASSERT_EQ(progress.updates.size(), 4u);  // the ignored report published nothing
    EXPECT_EQ(progress.updates[0].bytes_total, 1000u);
}

TEST(TaskContext, WithoutSinksEverythingIsANoOp) {
    TaskContext task;
    task.phase("write", 10);
    task.add_bytes(10);
    task.info("nobody listens");
    EXPECT_EQ(task.snapshot().bytes_done, 10u);
    EXPECT_TRUE(task.check_cancel("x"));
}

TEST(TaskContext, LogLinesReachTheSinkWithTheirLevel) {
    RecordingLog log;
    TaskContext task(nullptr, &log, CancelToken{}, system_clock());
    task.info("started");
    task.warn("scratch at 80%");
    ASSERT_EQ(log.lines.size(), 2u);
    EXPECT_EQ(log.lines[1].first, LogLevel::warning);
    EXPECT_EQ(log_level_name(log.lines[1].first), "warning");
}

TEST(ManualClock, StandsStillUntilMovedAndSleepMovesIt) {
    auto start = Clock::time_point(std::chrono::hours(24 * 365 * 50));
    ManualClock clock(start);
    EXPECT_EQ(clock.now(), start);
    clock.advance(72h);
    EXPECT_EQ(clock.now(), start + 72h);
    clock.sleep_until(start + 73h);
    EXPECT_EQ(clock.now(), start + 73h);
    clock.sleep_until(start);  // in the past: no change
    EXPECT_EQ(clock.now(), start + 73h);
}

}  // namespace
}  // namespace vmshadow
