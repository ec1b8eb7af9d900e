// SPDX-License-Identifier: MIT
// CalendarEvent against systemd: a golden table made by `systemd-analyze calendar`
// (make-calendar-golden.py), the same table checked live against the installed
// systemd-analyze, and the expressions both must refuse.
#include "daemon/calendar.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vmshadow::daemon {
namespace {

using std::chrono::seconds;

struct GoldenRow {
    const char* tz;
    std::int64_t base;
    const char* expression;
    const char* normalized;
    std::vector<std::int64_t> elapses;
};

const std::vector<GoldenRow>& golden() {
    static const std::vector<GoldenRow> rows = {
#include "unit/daemon/calendar_golden.inc"
    };
    return rows;
}

constexpr std::size_t kIterations = 6;

// Sets TZ for the test's scope and puts the old value back, so no test leaks its zone.
class ScopedTz {
  public:
    explicit ScopedTz(const std::string& tz) {
        if (const char* old = std::getenv("TZ")) old_ = old;
        setenv("TZ", tz.c_str(), 1);
        tzset();
    }
    ~ScopedTz() {
        if (old_) {
            setenv("TZ", old_->c_str(), 1);
        } else {
            unsetenv("TZ");
        }
        tzset();
    }
    ScopedTz(const ScopedTz&) = delete;
    ScopedTz& operator=(const ScopedTz&) = delete;

  private:
    std::optional<std::string> old_;
};

Clock::time_point at(std::int64_t unix) {
    return Clock::time_point(seconds(unix));
}

// The next `count` elapses after `from`, in whole Unix seconds (what systemd-analyze shows);
// shorter when the event stops elapsing.
std::vector<std::int64_t> elapses(const CalendarEvent& event, Clock::time_point from,
                                  std::size_t count) {
    std::vector<std::int64_t> out;
    auto cursor = from;
    while (out.size() < count) {
        auto next = event.next_after(cursor);
        if (!next) break;
        EXPECT_GT(*next, cursor) << event.text();
        out.push_back(unix_seconds(*next));
        cursor = *next;
    }
    return out;
}

TEST(CalendarGolden, TableHasAtLeastFortyExpressions) {
    EXPECT_GE(golden().size(), 40u);
}

TEST(CalendarGolden, NormalizedFormsMatchSystemdAnalyze) {
    for (const auto& row : golden()) {
        ScopedTz tz(row.tz);
        auto event = CalendarEvent::parse(row.expression);
        ASSERT_TRUE(event) << row.expression << ": " << event.error().message();
        EXPECT_EQ(event->normalized(), row.normalized) << row.expression;
        EXPECT_EQ(event->text(), row.expression);
    }
}

TEST(CalendarGolden, NextElapsesMatchSystemdAnalyze) {
    for (const auto& row : golden()) {
        ScopedTz tz(row.tz);
        auto event = CalendarEvent::parse(row.expression);
        ASSERT_TRUE(event) << row.expression << ": " << event.error().message();
        EXPECT_EQ(elapses(*event, at(row.base), kIterations), row.elapses)
            << row.expression << " with TZ=" << row.tz << " from @" << row.base;
    }
}

TEST(CalendarEvent, FractionalSecondsElapseBetweenWholeSeconds) {
    ScopedTz tz("UTC");
    auto event = CalendarEvent::parse("*-*-* 12:00:00.5");
    ASSERT_TRUE(event);
    auto next = event->next_after(at(1774606653));
    ASSERT_TRUE(next);
    EXPECT_EQ(*next, at(1774612800) + std::chrono::milliseconds(500));
    // Strictly after: from the elapse itself, the next is a day later.
    EXPECT_EQ(event->next_after(*next), at(1774612800 + 86400) + std::chrono::milliseconds(500));
}

TEST(CalendarEvent, ImpossibleDatesGiveUpQuickly) {
    ScopedTz tz("UTC");
    for (const char* text : {"*-02-30", "Mon *-04-31", "2020-02-30", "*-02-30 Europe/Berlin"}) {
        auto event = CalendarEvent::parse(text);
        ASSERT_TRUE(event) << text;
        const auto started = std::chrono::steady_clock::now();
        EXPECT_FALSE(event->next_after(at(1774606653))) << text;
        EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2)) << text;
    }
}

TEST(CalendarEvent, NeverElapsesPastTheLastYear) {
    ScopedTz tz("UTC");
    auto event = CalendarEvent::parse("minutely");
    ASSERT_TRUE(event);
    EXPECT_FALSE(event->next_after(at(7258118400)));  // 2200-01-01
    EXPECT_TRUE(event->next_after(at(7258118400 - 120)));
}

TEST(CalendarEvent, NamedZoneIgnoresTheProcessZone) {
    std::vector<std::int64_t> seen;
    for (const char* local : {"UTC", "America/New_York", "Asia/Kolkata"}) {
        ScopedTz tz(local);
        auto event = CalendarEvent::parse("Mon..Fri 22:00 Europe/Berlin");
        ASSERT_TRUE(event);
        seen.push_back(unix_seconds(*event->next_after(at(1774606653))));
    }
    EXPECT_EQ(seen, std::vector<std::int64_t>(3, 1774645200));  // Fri 22:00 CET
}

// --- invalid expressions

const std::vector<std::string>& invalid_expressions() {
    static const std::vector<std::string> list = [] {
        std::vector<std::string> v = {
            "",
            "foo",
            " daily",
            "daily ",
            "dailyy",
            "Mon..",
            "Sun..Mon",
            "Mond",
            "Mon Tue",
            "Mon-Fri/2",
            "*:*/5",
            "*/5:00",
            "*-*-* 24:00",
            "*-*-* 1:60",
            "*-*-* 1:1:60",
            "*-13-1",
            "*-0-1",
            "*-1-0",
            "*-*-32",
            "*:50/15",
            "*:0/60",
            "*:*:0/60",
            "*-*-1/0",
            "5..3:00",
            "1969-01-01",
            "2200-1-1",
            "*-02~29",
            "*-*~1/2",
            "*-*-~2",
            "*-*-* 00:00:05.",
            "*-*-* 1:2:3:4",
            "12:00 Europe/Berlinx",
            "12:00 europe/berlin",
            "12:00 Europe/../Europe/Berlin",
            "1:2:3 UTC UTC",
            "99999999999:00",
            "@",
            "*,*:00",
            "*-*-* 12:00;rm",
            "*:*:28..28",  // a seconds range shorter than its 1s step
            "*:*:28.5..29",
            "*-04~1,28",  // the second "~" value may count back only 25 days
            "*-04~04..20/7,28",
            "daily\n",
            "daily\tUTC",
            "daily\x01",
        };
        // More than 240 comma-separated values.
        std::string many = "0";
        for (int i = 0; i < 250; ++i) many += ",0";
        v.push_back(many + ":00");
        return v;
    }();
    return list;
}

TEST(CalendarEvent, InvalidExpressionsFailWithOneLineNamingThem) {
    ScopedTz tz("UTC");
    for (const auto& text : invalid_expressions()) {
        auto event = CalendarEvent::parse(text);
        ASSERT_FALSE(event) << "accepted '" << text << "' as " << event->normalized();
        EXPECT_EQ(event.error().kind(), ErrorKind::invalid_argument) << text;
        const std::string& message = event.error().message();
        const bool printable = std::all_of(
            text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x20; });
        if (printable) {
            EXPECT_NE(message.find("'" + text + "'"), std::string::npos) << message;
        }
        EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
}

TEST(CalendarEvent, InvalidExpressionsSayWhatIsWrong) {
    ScopedTz tz("UTC");
    auto message = [](const char* text) {
        auto event = CalendarEvent::parse(text);
        return event ? std::string("accepted") : event.error().message();
    };
    EXPECT_NE(message("*-13-1").find("month 13 is out of range (1..12)"), std::string::npos)
        << message("*-13-1");
    EXPECT_NE(message("*-*-* 24:00").find("hour 24 is out of range (0..23)"), std::string::npos)
        << message("*-*-* 24:00");
    EXPECT_NE(message("*-*-1/0").find("repetition of 0"), std::string::npos) << message("*-*-1/0");
    EXPECT_NE(message("Mond").find("unknown weekday"), std::string::npos) << message("Mond");
}

TEST(CalendarEvent, LeapSecondZonesAreRefused) {
    ScopedTz tz("UTC");
    auto event = CalendarEvent::parse("daily right/UTC");
    ASSERT_FALSE(event);
    EXPECT_NE(event.error().message().find("leap seconds"), std::string::npos)
        << event.error().message();
}

// --- live: the installed systemd-analyze, from now

bool have_systemd_analyze() {
    return std::system("command -v systemd-analyze >/dev/null 2>&1") == 0;
}

std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

struct Analyzed {
    int exit_code = -1;
    std::string normalized;
    std::vector<std::int64_t> elapses;
};

std::int64_t parse_utc(const char* text) {  // "2026-03-30 20:00:00"
    std::tm tm{};
    if (std::sscanf(text, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                    &tm.tm_min, &tm.tm_sec) != 6) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

// Runs systemd-analyze (in the process's TZ) and reads the elapses: each "Next elapse:" or
// "Iter. #n:" line is local time, followed by "(in UTC):" unless local time is UTC.
Analyzed analyze(const std::string& expression) {
    Analyzed result;
    const std::string command =
        "LC_ALL=C systemd-analyze calendar --iterations=" + std::to_string(kIterations) + " -- " +
        shell_quote(expression) + " 2>/dev/null";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
    if (!pipe) return result;
    std::array<char, 512> line{};
    std::optional<std::int64_t> pending;  // an elapse line waiting for its "(in UTC)" line
    auto flush = [&] {
        if (pending) result.elapses.push_back(*pending);
        pending.reset();
    };
    while (std::fgets(line.data(), line.size(), pipe.get()) != nullptr) {
        std::string text(line.data());
        if (!text.empty() && text.back() == '\n') text.pop_back();
        const auto colon = text.find(": ");
        if (colon == std::string::npos) continue;
        const std::string key = text.substr(text.find_first_not_of(' '), colon);
        const std::string value = text.substr(colon + 2);
        if (key.starts_with("Normalized form")) result.normalized = value;
        const auto space = value.find(' ');  // after the weekday
        if (key.starts_with("Next elapse") || key.starts_with("Iter.")) {
            flush();
            if (value != "never" && value.ends_with(" UTC")) {
                pending = parse_utc(value.c_str() + space + 1);
            } else if (value != "never") {
                pending = -1;  // local time: the "(in UTC)" line follows
            }
        } else if (key.starts_with("(in UTC)") && pending) {
            pending = parse_utc(value.c_str() + space + 1);
        }
    }
    flush();
    FILE* raw = pipe.release();
    const int status = pclose(raw);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

TEST(CalendarLive, AgreesWithSystemdAnalyzeFromNow) {
    if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
    for (const auto& row : golden()) {
        ScopedTz tz(row.tz);
        auto event = CalendarEvent::parse(row.expression);
        ASSERT_TRUE(event) << row.expression;
        // systemd-analyze reads its "now" somewhere between before and after; when our
        // answers from both ends agree, its answer must be that one. Else a second (or an
        // elapse) ticked by while it ran: try again.
        bool compared = false;
        for (int attempt = 0; attempt < 5 && !compared; ++attempt) {
            const auto before = system_clock().now();
            const Analyzed got = analyze(row.expression);
            const auto after = system_clock().now();
            const auto from_before = elapses(*event, before, kIterations);
            if (from_before != elapses(*event, after, kIterations)) continue;
            compared = true;
            EXPECT_EQ(got.exit_code, 0) << row.expression;
            EXPECT_EQ(got.normalized, event->normalized()) << row.expression;
            EXPECT_EQ(got.elapses, from_before) << row.expression << " with TZ=" << row.tz;
        }
        EXPECT_TRUE(compared) << row.expression << ": the clock kept moving under 5 attempts";
    }
}

TEST(CalendarLive, SystemdAnalyzeAlsoRejectsTheInvalidExpressions) {
    if (!have_systemd_analyze()) GTEST_SKIP() << "systemd-analyze is not installed";
    ScopedTz tz("UTC");
    for (const auto& text : invalid_expressions()) {
        if (text.find('\n') != std::string::npos) continue;  // not one shell word
        EXPECT_NE(analyze(text).exit_code, 0) << "systemd-analyze accepts '" << text << "'";
    }
}

}  // namespace
}  // namespace vmshadow::daemon
