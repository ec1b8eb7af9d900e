// SPDX-License-Identifier: MIT
#pragma once
// Clock: where vmshadow reads the time of day and waits, so tests move time instead of
// sleeping (lock staleness, time stamps of points and records, retention, schedules).
//
// This module is: an interface with two implementations — `SystemClock` (the wall clock,
// std::chrono::system_clock) and `ManualClock` (for tests: time stands still until the test
// sets or advances it; sleep_until returns at once after moving the clock there).
// It is not: a monotonic timer for measuring durations (use std::chrono::steady_clock for
// freeze windows and rates: a clock jump must not bend them).
//
// Thread-safety: both implementations may be used from several threads.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace vmshadow {

class Clock {
  public:
    using time_point = std::chrono::system_clock::time_point;
    virtual ~Clock() = default;
    virtual time_point now() const = 0;
    // Blocks until now() >= when (or returns at once when that has passed).
    virtual void sleep_until(time_point when) const = 0;
};

class SystemClock final : public Clock {
  public:
    time_point now() const override;
    void sleep_until(time_point when) const override;
};

// The process's wall clock: what every caller that was not handed a clock uses.
const Clock& system_clock();

// Whole seconds since the Unix epoch (what records and locks store).
inline std::int64_t unix_seconds(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

class ManualClock final : public Clock {
  public:
    explicit ManualClock(time_point start) : now_(start.time_since_epoch().count()) {}
    time_point now() const override;
    // Moves the clock to `when` if that is later: a sleeper's wait has passed.
    void sleep_until(time_point when) const override;
    void set(time_point when);
    void advance(std::chrono::system_clock::duration by);

  private:
    mutable std::atomic<std::chrono::system_clock::rep> now_;
};

}  // namespace vmshadow
