// SPDX-License-Identifier: MIT
#pragma once
// CalendarEvent: a job's schedule in systemd's calendar-event syntax (systemd.time(7)), and
// when it next elapses — the same answer `systemd-analyze calendar --iterations=N` gives
// (tests/unit/daemon/calendar_test.cpp holds a golden table made by it).
//
// This module is: parsing — shorthands (minutely, hourly, daily, monthly, weekly, yearly,
// annually, quarterly, semiannually), weekday lists and ranges (Mon..Fri, Sat,Sun), dates
// (*-*-*, 2026-12-*, *-1/2-01, last day "~"), times (22:00, *:0/15, 02:00:00, *:*:0/20,
// lists and ranges "8..18", repetitions "a/b"), a time zone "UTC" or an IANA name at the end —
// into a normalized form (what systemd-analyze prints as "Normalized form"); and next_after,
// the first elapse strictly after a given instant (seconds resolution), in the event's zone
// (the process's local time when none is named), across DST changes as systemd does.
// It is not: the scheduler (scheduler.h decides what runs and when to catch up).
//
// Thread-safety: an immutable value after parse.

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/error.h"

namespace vmshadow::daemon {

class CalendarEvent {
  public:
    // invalid_argument naming the expression and the part that is wrong.
    static Result<CalendarEvent> parse(std::string_view text);

    // The first elapse strictly after `after`, or nullopt when there is none (a date in
    // the past, "2020-01-01").
    std::optional<Clock::time_point> next_after(Clock::time_point after) const;

    const std::string& text() const { return text_; }
    // As systemd-analyze prints it: "*-*-* *:00/15:00", "Mon..Fri *-*-* 22:00:00".
    std::string normalized() const;

    struct Spec;  // the parsed components (calendar.cpp)
    CalendarEvent(std::string text, std::shared_ptr<const Spec> spec);

  private:
    std::string text_;
    std::shared_ptr<const Spec> spec_;
};

}  // namespace vmshadow::daemon
