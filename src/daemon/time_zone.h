// SPDX-License-Identifier: MIT
#pragma once
// Time zones for calendar events (calendar.cpp): wall-clock arithmetic on the proleptic
// Gregorian calendar, and the UTC offset of a zone at an instant.
//
// This module is: UTC; the process's local time (glibc's localtime_r, so TZ is honored); a
// named IANA zone read from its TZif file (RFC 8536, with the POSIX TZ rule at its end for
// times past its table), so that an event in another zone never touches the process-wide TZ;
// and Converter, mktime() as glibc does it inside systemd's calendar search.
// It is not: a formatter or a general time library (only what calendar events need).
//
// Thread-safety: zones are immutable and may be shared; a Converter belongs to one search.

#include <cstdint>
#include <memory>
#include <string>

namespace vmshadow::daemon::tz {

std::int64_t floor_div(std::int64_t a, std::int64_t b);
// Days since 1970-01-01 of a proleptic Gregorian date (month 1..12).
std::int64_t days_from_civil(std::int64_t y, int m, int d);
bool is_leap(std::int64_t y);
int days_in_month(std::int64_t y, int m);

// A wall-clock time; fields may be out of range until normalized (like struct tm).
struct Wall {
    std::int64_t year = 1970;
    int month = 1, day = 1, hour = 0, minute = 0, second = 0;
    bool operator==(const Wall&) const = default;
};

// The wall time read as if it were UTC: seconds since the epoch, overflowing fields carried.
std::int64_t wall_seconds(const Wall& w);
Wall wall_from_seconds(std::int64_t s);
// 0 = Monday .. 6 = Sunday.
int weekday_of(const Wall& w);

// A time zone: the UTC offset (seconds east) in effect at a Unix time.
class TimeZone {
  public:
    virtual ~TimeZone() = default;
    virtual std::int64_t offset_at(std::int64_t t) const = 0;
};

const TimeZone& utc_zone();
const TimeZone& local_zone();
// The zone in a TZif file; nullptr when it is unreadable, malformed, or counts leap seconds
// (the "right/" zones: our clock does not).
std::shared_ptr<const TimeZone> load_tzif(const std::string& path);

// Converts between Unix time and wall time in one zone, remembering the last UTC offset the
// way glibc's mktime() does: in a DST overlap the offset last used wins, in a gap the time
// moves forward (02:30 in a spring-forward gap becomes 03:30).
class Converter {
  public:
    Converter(const TimeZone& zone, std::int64_t t) : zone_(zone), guess_(zone.offset_at(t)) {}

    Wall to_wall(std::int64_t t) const { return wall_from_seconds(t + zone_.offset_at(t)); }

    // mktime(): the instant of `w`; `w` becomes that instant's wall time.
    std::int64_t to_instant(Wall& w);

  private:
    const TimeZone& zone_;
    std::int64_t guess_;
};

}  // namespace vmshadow::daemon::tz
