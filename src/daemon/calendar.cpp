// SPDX-License-Identifier: MIT
#include "daemon/calendar.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>
#include <vector>

// The rules are systemd's (systemd.time(7), calendarspec.c of systemd 252): the same
// grammar, the same normalization, and the same search — each component is matched from the
// largest (year) to the smallest (seconds, in microseconds), and a wall-clock time that does
// not exist (Feb 30, a DST gap) is normalized forward and the search goes on from there.
// Where glibc's mktime() decides an ambiguous wall time (a DST overlap), we decide it the way
// glibc does inside systemd's search: keep the UTC offset of the previous conversion.

namespace vmshadow::daemon {

namespace calendar_detail {

// A time zone: the UTC offset (seconds east) in effect at a Unix time.
class TimeZone {
  public:
    virtual ~TimeZone() = default;
    virtual std::int64_t offset_at(std::int64_t t) const = 0;
};

}  // namespace calendar_detail

using calendar_detail::TimeZone;

namespace {

constexpr int kMinYear = 1970;
constexpr int kMaxYear = 2199;  // systemd's bound: past it an event never elapses
constexpr int kUsecPerSec = 1'000'000;
constexpr int kAllWeekdays = 127;
constexpr std::size_t kMaxComponents = 240;  // systemd's bound on a comma list

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

// Days since 1970-01-01 of a proleptic Gregorian date (month 1..12).
std::int64_t days_from_civil(std::int64_t y, int m, int d) {
    y -= m <= 2 ? 1 : 0;
    const std::int64_t era = floor_div(y, 400);
    const std::int64_t yoe = y - era * 400;
    const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool is_leap(std::int64_t y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int days_in_month(std::int64_t y, int m) {
    static constexpr std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : kDays[static_cast<std::size_t>(m - 1)];
}

// A wall-clock time; fields may be out of range until normalized (like struct tm).
struct Wall {
    std::int64_t year = 1970;
    int month = 1, day = 1, hour = 0, minute = 0, second = 0;
    bool operator==(const Wall&) const = default;
};

// The wall time read as if it were UTC: seconds since the epoch, overflowing fields carried.
std::int64_t wall_seconds(const Wall& w) {
    const std::int64_t m0 = w.month - 1;
    const std::int64_t y = w.year + floor_div(m0, 12);
    const int m = static_cast<int>(m0 - floor_div(m0, 12) * 12) + 1;
    const std::int64_t days = days_from_civil(y, m, 1) + w.day - 1;
    return days * 86400 + std::int64_t{w.hour} * 3600 + std::int64_t{w.minute} * 60 + w.second;
}

Wall wall_from_seconds(std::int64_t s) {
    std::int64_t z = floor_div(s, 86400);
    const std::int64_t secs = s - z * 86400;
    z += 719468;
    const std::int64_t era = floor_div(z, 146097);
    const std::int64_t doe = z - era * 146097;
    const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const std::int64_t mp = (5 * doy + 2) / 153;
    Wall w;
    w.day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
    w.month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    w.year = yoe + era * 400 + (w.month <= 2 ? 1 : 0);
    w.hour = static_cast<int>(secs / 3600);
    w.minute = static_cast<int>(secs / 60 % 60);
    w.second = static_cast<int>(secs % 60);
    return w;
}

// 0 = Monday .. 6 = Sunday (1970-01-01 was a Thursday).
int weekday_of(const Wall& w) {
    const std::int64_t days = days_from_civil(w.year, w.month, w.day);
    return static_cast<int>(((days + 3) % 7 + 7) % 7);
}

class UtcZone final : public TimeZone {
  public:
    std::int64_t offset_at(std::int64_t) const override { return 0; }
};

// The process's local time (TZ, else /etc/localtime), as glibc's localtime_r sees it.
class LocalZone final : public TimeZone {
  public:
    std::int64_t offset_at(std::int64_t t) const override {
        const auto tt = static_cast<std::time_t>(t);
        std::tm tm{};
        if (localtime_r(&tt, &tm) == nullptr) return 0;
        return tm.tm_gmtoff;
    }
};

// --- A named zone read from its TZif file (RFC 8536), so that an event in another zone never
// touches the process-wide TZ the rest of the daemon uses.

// The POSIX TZ string at the end of a TZif file: the rule for times past its table.
struct PosixRule {
    struct Date {
        char kind = 'M';  // 'J' Julian 1..365 without Feb 29, 'N' zero-based day, 'M' m.w.d
        int a = 0, b = 0, c = 0;
        std::int64_t time = 7200;
    };
    std::int64_t std_offset = 0;  // seconds east
    bool has_dst = false;
    std::int64_t dst_offset = 0;
    Date start, end;

    static std::optional<PosixRule> parse(std::string_view s);
    std::int64_t offset_at(std::int64_t t) const;

  private:
    static std::int64_t date_seconds(const Date& d, std::int64_t year);
};

class PosixCursor {
  public:
    explicit PosixCursor(std::string_view s) : s_(s) {}
    bool done() const { return i_ >= s_.size(); }
    char peek() const { return done() ? '\0' : s_[i_]; }
    bool eat(char c) {
        if (peek() != c) return false;
        ++i_;
        return true;
    }
    bool name() {
        if (eat('<')) {
            while (!done() && peek() != '>') ++i_;
            return eat('>');
        }
        const std::size_t from = i_;
        while (std::isalpha(static_cast<unsigned char>(peek()))) ++i_;
        return i_ - from >= 3;
    }
    std::optional<int> number() {
        if (!std::isdigit(static_cast<unsigned char>(peek()))) return std::nullopt;
        int v = 0;
        while (std::isdigit(static_cast<unsigned char>(peek())) && v < 100000) {
            v = v * 10 + (s_[i_++] - '0');
        }
        return v;
    }
    // [+-]hh[:mm[:ss]] in seconds, as written (POSIX offsets are west-positive).
    std::optional<std::int64_t> hms() {
        const int sign = eat('-') ? -1 : (eat('+'), 1);
        auto h = number();
        if (!h) return std::nullopt;
        std::int64_t v = std::int64_t{*h} * 3600;
        for (int scale : {60, 1}) {
            if (!eat(':')) break;
            auto part = number();
            if (!part) return std::nullopt;
            v += std::int64_t{*part} * scale;
        }
        return sign * v;
    }
    std::optional<PosixRule::Date> date() {
        PosixRule::Date d;
        if (eat('J')) {
            d.kind = 'J';
        } else if (eat('M')) {
            d.kind = 'M';
        } else {
            d.kind = 'N';
        }
        auto a = number();
        if (!a) return std::nullopt;
        d.a = *a;
        if (d.kind == 'M') {
            std::optional<int> b, c;
            if (!eat('.') || !(b = number()) || !eat('.') || !(c = number())) return std::nullopt;
            d.b = *b;
            d.c = *c;
            if (d.a < 1 || d.a > 12 || d.b < 1 || d.b > 5 || d.c > 6) return std::nullopt;
        }
        if (eat('/')) {
            auto t = hms();
            if (!t) return std::nullopt;
            d.time = *t;
        }
        return d;
    }

  private:
    std::string_view s_;
    std::size_t i_ = 0;
};

std::optional<PosixRule> PosixRule::parse(std::string_view s) {
    PosixCursor cur(s);
    PosixRule rule;
    if (!cur.name()) return std::nullopt;
    auto std_off = cur.hms();
    if (!std_off) return std::nullopt;
    rule.std_offset = -*std_off;
    if (cur.done()) return rule;
    if (!cur.name()) return std::nullopt;
    rule.has_dst = true;
    rule.dst_offset = rule.std_offset + 3600;
    if (cur.peek() != ',') {
        auto dst_off = cur.hms();
        if (!dst_off) return std::nullopt;
        rule.dst_offset = -*dst_off;
    }
    std::optional<Date> start, end;
    if (!cur.eat(',') || !(start = cur.date()) || !cur.eat(',') || !(end = cur.date()) ||
        !cur.done()) {
        return std::nullopt;
    }
    rule.start = *start;
    rule.end = *end;
    return rule;
}

std::int64_t PosixRule::date_seconds(const Date& d, std::int64_t year) {
    std::int64_t day = days_from_civil(year, 1, 1);
    if (d.kind == 'J') {
        day += d.a - 1 + (is_leap(year) && d.a >= 60 ? 1 : 0);
    } else if (d.kind == 'N') {
        day += d.a;
    } else {
        const std::int64_t first = days_from_civil(year, d.a, 1);
        const int first_wday = static_cast<int>(((first + 4) % 7 + 7) % 7);  // 0 = Sunday
        int mday = 1 + (d.c - first_wday + 7) % 7 + (d.b - 1) * 7;
        while (mday > days_in_month(year, d.a)) mday -= 7;
        day = first + mday - 1;
    }
    return day * 86400 + d.time;
}

std::int64_t PosixRule::offset_at(std::int64_t t) const {
    if (!has_dst) return std_offset;
    const std::int64_t year = wall_from_seconds(t + std_offset).year;
    const std::int64_t start_utc = date_seconds(start, year) - std_offset;
    const std::int64_t end_utc = date_seconds(end, year) - dst_offset;
    const bool dst =
        start_utc < end_utc ? (t >= start_utc && t < end_utc) : !(t >= end_utc && t < start_utc);
    return dst ? dst_offset : std_offset;
}

class TzifZone final : public TimeZone {
  public:
    static std::shared_ptr<const TzifZone> load(const std::string& path);
    std::int64_t offset_at(std::int64_t t) const override;

  private:
    std::vector<std::int64_t> transitions_;
    std::vector<std::uint8_t> type_of_;  // per transition: index into offsets_
    std::vector<std::int64_t> offsets_;  // per local time type
    std::optional<PosixRule> footer_;
};

class ByteReader {
  public:
    explicit ByteReader(const std::string& data) : data_(data) {}
    bool has(std::size_t n) const { return pos_ <= data_.size() && data_.size() - pos_ >= n; }
    std::int64_t be(std::size_t n) {
        std::uint64_t v = 0;
        for (std::size_t k = 0; k < n; ++k)
            v = (v << 8) | static_cast<unsigned char>(data_[pos_++]);
        if (n == 4) return static_cast<std::int32_t>(static_cast<std::uint32_t>(v));
        return static_cast<std::int64_t>(v);
    }
    void skip(std::size_t n) { pos_ += n; }
    std::size_t pos() const { return pos_; }

  private:
    const std::string& data_;
    std::size_t pos_ = 0;
};

std::shared_ptr<const TzifZone> TzifZone::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return nullptr;
    const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ByteReader r(data);
    if (!r.has(44) || data.compare(0, 4, "TZif") != 0) return nullptr;
    const bool v2 = data[4] >= '2';
    auto zone = std::make_shared<TzifZone>();
    for (int pass = 0; pass < (v2 ? 2 : 1); ++pass) {
        if (!r.has(44)) return nullptr;
        r.skip(20);
        std::array<std::size_t, 6> n{};  // isut, isstd, leap, time, type, char
        for (auto& count : n) count = static_cast<std::size_t>(r.be(4) & 0xffffffff);
        const std::size_t tsize = pass == 0 ? 4 : 8;
        const std::size_t body =
            n[3] * tsize + n[3] + n[4] * 6 + n[5] + n[2] * (tsize + 4) + n[1] + n[0];
        if (n[4] == 0 || !r.has(body)) return nullptr;
        // The "right/" zones count leap seconds in their Unix times; our clock does not.
        if (n[2] != 0) return nullptr;
        if (v2 && pass == 0) {
            r.skip(body);
            continue;
        }
        zone->transitions_.resize(n[3]);
        zone->type_of_.resize(n[3]);
        for (auto& t : zone->transitions_) t = r.be(tsize);
        for (auto& i : zone->type_of_) i = static_cast<std::uint8_t>(r.be(1));
        for (std::size_t k = 0; k < n[4]; ++k) {
            zone->offsets_.push_back(r.be(4));
            r.skip(2);
        }
        r.skip(n[5] + n[2] * (tsize + 4) + n[1] + n[0]);
    }
    for (auto i : zone->type_of_) {
        if (i >= zone->offsets_.size()) return nullptr;
    }
    if (v2 && r.pos() < data.size() && data[r.pos()] == '\n') {
        const auto end = data.find('\n', r.pos() + 1);
        if (end != std::string::npos) {
            zone->footer_ =
                PosixRule::parse(std::string_view(data).substr(r.pos() + 1, end - r.pos() - 1));
        }
    }
    return zone;
}

std::int64_t TzifZone::offset_at(std::int64_t t) const {
    if (transitions_.empty() || t < transitions_.front()) {
        return transitions_.empty() && footer_ ? footer_->offset_at(t) : offsets_.front();
    }
    if (t >= transitions_.back() && footer_) return footer_->offset_at(t);
    const auto it = std::upper_bound(transitions_.begin(), transitions_.end(), t);
    return offsets_[type_of_[static_cast<std::size_t>(it - transitions_.begin() - 1)]];
}

// Converts between Unix time and wall time in one zone, remembering the last UTC offset the
// way glibc's mktime() does: in a DST overlap the offset last used wins, in a gap the time
// moves forward (02:30 in a spring-forward gap becomes 03:30).
class Converter {
  public:
    Converter(const TimeZone& zone, std::int64_t t) : zone_(zone), guess_(zone.offset_at(t)) {}

    Wall to_wall(std::int64_t t) const { return wall_from_seconds(t + zone_.offset_at(t)); }

    // mktime(): the instant of `w`; `w` becomes that instant's wall time.
    std::int64_t to_instant(Wall& w) {
        const std::int64_t local = wall_seconds(w);
        std::int64_t t = local - guess_;
        const std::int64_t off = zone_.offset_at(t);
        if (off != guess_) {
            const std::int64_t t2 = local - off;
            t = zone_.offset_at(t2) == off ? t2 : std::max(t, t2);
        }
        guess_ = zone_.offset_at(t);
        w = wall_from_seconds(t + guess_);
        return t;
    }

  private:
    const TimeZone& zone_;
    std::int64_t guess_;
};

const TimeZone& utc_zone() {
    static const UtcZone zone;
    return zone;
}

const TimeZone& local_zone() {
    static const LocalZone zone;
    return zone;
}

}  // namespace

// start..stop/repeat; stop -1 when there is no range; repeat 0 for a single value.
struct Component {
    int start = 0;
    int stop = -1;
    int repeat = 0;
    auto operator<=>(const Component&) const = default;
};
using Chain = std::vector<Component>;  // empty: "*", any value

struct CalendarEvent::Spec {
    int weekdays = -1;  // bit 0 = Monday; -1 = any day
    bool end_of_month = false;
    Chain year, month, day, hour, minute;
    Chain usec;  // seconds in microseconds; never empty ("*" is 0/1s)
    bool utc = false;
    std::string zone_name;
    std::shared_ptr<const calendar_detail::TimeZone> zone;  // set for a named zone
};

namespace {

using Spec = CalendarEvent::Spec;

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

// systemd's rule for a zone name: letters, digits, "-_+/", no empty path part, and a TZif
// file under /usr/share/zoneinfo.
bool zone_name_valid(std::string_view name) {
    if (name.empty() || name.front() == '/' || name.back() == '/') return false;
    char prev = '\0';
    for (char c : name) {
        const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
                        c == '+' || c == '/';
        if (!ok || (c == '/' && prev == '/')) return false;
        prev = c;
    }
    std::ifstream in("/usr/share/zoneinfo/" + std::string(name), std::ios::binary);
    char magic[4] = {};
    return in.read(magic, 4) && std::string_view(magic, 4) == "TZif";
}

// The grammar of systemd.time(7), "Calendar Events": [weekdays] [date] [time].
class Parser {
  public:
    Parser(std::string_view body, Spec& spec) : s_(body), spec_(spec) {}

    // An empty string when it parsed, else what is wrong.
    std::string parse() {
        if (auto e = weekdays(); !e.empty()) return e;
        bool time_follows = true;
        if (auto e = date(time_follows); !e.empty()) return e;
        if (time_follows) {
            if (auto e = time(); !e.empty()) return e;
        }
        if (!done()) return "unexpected '" + std::string(rest()) + "'";
        return {};
    }

  private:
    bool done() const { return i_ >= s_.size(); }
    char peek(std::size_t k = 0) const { return i_ + k < s_.size() ? s_[i_ + k] : '\0'; }
    std::string_view rest() const { return s_.substr(std::min(i_, s_.size())); }
    void skip_spaces() {
        while (peek() == ' ') ++i_;
    }
    static std::string at(std::string_view what, std::string_view where) {
        return std::string(what) + " at '" + std::string(where) + "'";
    }

    std::string weekdays();
    std::string date(bool& time_follows);
    std::string time();
    std::string chain(bool usec, Chain& out);
    std::string component(bool usec, Chain& out);
    std::string decimal(bool usec, int& out);

    std::string_view s_;
    std::size_t i_ = 0;
    Spec& spec_;
};

std::string Parser::weekdays() {
    static constexpr std::array<std::pair<std::string_view, int>, 14> kDays = {{
        {"monday", 0},
        {"mon", 0},
        {"tuesday", 1},
        {"tue", 1},
        {"wednesday", 2},
        {"wed", 2},
        {"thursday", 3},
        {"thu", 3},
        {"friday", 4},
        {"fri", 4},
        {"saturday", 5},
        {"sat", 5},
        {"sunday", 6},
        {"sun", 6},
    }};
    int range_from = -1;
    bool first = true;
    int bits = 0;
    for (;;) {
        const auto here = rest();
        const auto* match = std::find_if(kDays.begin(), kDays.end(), [&](const auto& d) {
            return here.size() >= d.first.size() &&
                   iequals(here.substr(0, d.first.size()), d.first);
        });
        if (match == kDays.end()) {
            if (first) return {};  // no weekdays: a date or time follows
            return at("expected a weekday", here);
        }
        const char after = here.size() > match->first.size() ? here[match->first.size()] : '\0';
        if (after != '\0' && after != '-' && after != '.' && after != ',' && after != ' ') {
            return at("unknown weekday", here);
        }
        bits |= 1 << match->second;
        if (range_from >= 0) {
            if (range_from > match->second) return at("weekday range runs backwards", here);
            for (int d = range_from + 1; d < match->second; ++d) bits |= 1 << d;
        }
        i_ += match->first.size();
        spec_.weekdays = bits;
        if (done()) return {};
        if (peek() == ' ') {
            skip_spaces();
            return {};
        }
        if (peek() == '.') {
            if (range_from >= 0 || peek(1) != '.') return at("bad weekday range", rest());
            range_from = match->second;
            i_ += 2;
        } else if (peek() == '-') {  // "Mon-Fri", the old spelling of a range
            if (range_from >= 0) return at("bad weekday range", rest());
            range_from = match->second;
            i_ += 1;
        } else if (peek() == ',') {
            range_from = -1;
            i_ += 1;
        }
        if (done() || peek() == ' ') {
            skip_spaces();
            if (range_from >= 0) return "weekday range has no end";
            return {};
        }
        first = false;
    }
}

std::string Parser::decimal(bool usec, int& out) {
    if (!std::isdigit(static_cast<unsigned char>(peek()))) return at("expected a number", rest());
    std::int64_t value = 0;
    while (std::isdigit(static_cast<unsigned char>(peek()))) {
        value = value * 10 + (s_[i_++] - '0');
        if (value > 0x7fffffff) return "number out of range";
    }
    if (usec) {
        value *= kUsecPerSec;
        // One "." is a decimal point, ".." a range.
        if (peek() == '.' && peek(1) != '.') {
            ++i_;
            if (!std::isdigit(static_cast<unsigned char>(peek()))) {
                return at("expected digits after the decimal point", rest());
            }
            std::int64_t fraction = 0;
            int digits = 0;
            for (; std::isdigit(static_cast<unsigned char>(peek())); ++i_, ++digits) {
                const int digit = s_[i_] - '0';
                if (digits < 6) fraction = fraction * 10 + digit;
                if (digits == 6 && digit >= 5) ++fraction;  // rounded to microseconds
            }
            for (; digits < 6; ++digits) fraction *= 10;
            value += fraction;
        }
    }
    if (value > 0x7fffffff) return "number out of range";
    out = static_cast<int>(value);
    return {};
}

std::string Parser::component(bool usec, Chain& out) {
    for (;;) {
        if (out.size() >= kMaxComponents) return "too many comma-separated values";
        Component c;
        if (auto e = decimal(usec, c.start); !e.empty()) return e;
        if (peek() == '.' && peek(1) == '.') {
            i_ += 2;
            if (auto e = decimal(usec, c.stop); !e.empty()) return e;
            c.repeat = usec ? kUsecPerSec : 1;
        }
        if (peek() == '/') {
            ++i_;
            if (auto e = decimal(usec, c.repeat); !e.empty()) return e;
            if (c.repeat == 0) return "a repetition of 0";
        } else if (usec && c.stop >= 0 && std::int64_t{c.start} + c.repeat > c.stop) {
            // Seconds step by 1s unless told otherwise: a shorter range never repeats.
            return at("a seconds range shorter than its 1s step", rest());
        }
        const char next = peek();
        if (next != '\0' && next != ' ' && next != ',' && next != '-' && next != '~' &&
            next != ':') {
            return at("unexpected character", rest());
        }
        out.push_back(c);
        if (next != ',') return {};
        ++i_;
    }
}

std::string Parser::chain(bool usec, Chain& out) {
    out.clear();
    if (peek() == '*') {
        ++i_;
        if (usec) out.push_back({0, -1, kUsecPerSec});
        return {};
    }
    return component(usec, out);
}

std::string Parser::date(bool& time_follows) {
    time_follows = true;
    if (done()) return {};
    if (peek() == '@') {  // @SECONDS: one instant, in UTC
        ++i_;
        if (!std::isdigit(static_cast<unsigned char>(peek())))
            return at("expected seconds", rest());
        std::int64_t seconds = 0;
        while (std::isdigit(static_cast<unsigned char>(peek()))) {
            seconds = seconds * 10 + (s_[i_++] - '0');
            if (seconds > 100'000'000'000) return "timestamp out of range";
        }
        const Wall w = wall_from_seconds(seconds);
        spec_.year = {{static_cast<int>(w.year), -1, 0}};
        spec_.month = {{w.month, -1, 0}};
        spec_.day = {{w.day, -1, 0}};
        spec_.hour = {{w.hour, -1, 0}};
        spec_.minute = {{w.minute, -1, 0}};
        spec_.usec = {{w.second * kUsecPerSec, -1, 0}};
        spec_.utc = true;
        time_follows = false;
        return {};
    }
    const std::size_t start = i_;
    Chain first, second, third;
    if (auto e = chain(false, first); !e.empty()) return e;
    if (done() || peek() == ':') {  // it was an hour, not a date
        i_ = start;
        return {};
    }
    if (peek() == '~') {
        spec_.end_of_month = true;
    } else if (peek() != '-') {
        return at("expected '-' in the date", rest());
    }
    ++i_;
    if (auto e = chain(false, second); !e.empty()) return e;
    if (done() || peek() == ' ') {  // month-day
        skip_spaces();
        spec_.month = std::move(first);
        spec_.day = std::move(second);
        return {};
    }
    if (spec_.end_of_month) return at("'~' must come before the day", rest());
    if (peek() == '~') {
        spec_.end_of_month = true;
    } else if (peek() != '-') {
        return at("expected '-' in the date", rest());
    }
    ++i_;
    if (auto e = chain(false, third); !e.empty()) return e;
    if (!done() && peek() != ' ') return at("unexpected character after the date", rest());
    skip_spaces();
    spec_.year = std::move(first);
    spec_.month = std::move(second);
    spec_.day = std::move(third);
    return {};
}

std::string Parser::time() {
    if (done()) {  // no time: midnight
        spec_.hour = {{0, -1, 0}};
        spec_.minute = {{0, -1, 0}};
        spec_.usec = {{0, -1, 0}};
        return {};
    }
    if (auto e = chain(false, spec_.hour); !e.empty()) return e;
    if (peek() != ':') return at("expected ':' in the time", rest());
    ++i_;
    if (auto e = chain(false, spec_.minute); !e.empty()) return e;
    if (done()) {
        spec_.usec = {{0, -1, 0}};
        return {};
    }
    if (peek() != ':') return at("expected ':' in the time", rest());
    ++i_;
    if (auto e = chain(true, spec_.usec); !e.empty()) return e;
    if (!done()) return at("unexpected text after the seconds", rest());
    return {};
}

std::string shorthand(std::string_view body, Spec& spec) {
    const Chain zero = {{0, -1, 0}};
    const Chain one = {{1, -1, 0}};
    spec.usec = zero;
    if (iequals(body, "minutely")) return {};
    spec.minute = zero;
    if (iequals(body, "hourly")) return {};
    spec.hour = zero;
    if (iequals(body, "daily")) return {};
    if (iequals(body, "weekly")) {
        spec.weekdays = 1;
        return {};
    }
    spec.day = one;
    if (iequals(body, "monthly")) return {};
    if (iequals(body, "yearly") || iequals(body, "annually") || iequals(body, "anually")) {
        spec.month = one;
        return {};
    }
    if (iequals(body, "quarterly")) {
        spec.month = {{1, -1, 0}, {4, -1, 0}, {7, -1, 0}, {10, -1, 0}};
        return {};
    }
    for (auto name : {"semiannually", "semi-annually", "biannually", "bi-annually"}) {
        if (iequals(body, name)) {
            spec.month = {{1, -1, 0}, {7, -1, 0}};
            return {};
        }
    }
    return "not a shorthand";
}

void normalize_chain(Chain& chain) {
    for (auto& c : chain) {
        // A range ends on its last repetition; a range of one value is that value.
        if (c.stop > c.start && c.repeat > 0) c.stop -= (c.stop - c.start) % c.repeat;
        if (c.stop == c.start) {
            c.stop = -1;
            c.repeat = 0;
        }
    }
    std::sort(chain.begin(), chain.end());
    chain.erase(std::unique(chain.begin(), chain.end()), chain.end());
}

void fix_years(Chain& chain) {  // "26" is 2026, "89" is 1989
    for (auto& c : chain) {
        for (int* v : {&c.start, &c.stop}) {
            if (*v >= 0 && *v < 70)
                *v += 2000;
            else if (*v >= 70 && *v < 100)
                *v += 1900;
        }
    }
}

void normalize(Spec& spec) {
    if (spec.weekdays <= 0 || spec.weekdays >= kAllWeekdays) spec.weekdays = -1;
    if (spec.end_of_month && spec.day.empty()) spec.end_of_month = false;
    fix_years(spec.year);
    for (Chain* c : {&spec.year, &spec.month, &spec.day, &spec.hour, &spec.minute, &spec.usec}) {
        normalize_chain(*c);
    }
}

// A range check of one field; the message names it.
std::string check_chain(const Chain& chain, std::string_view field, int from, int to,
                        bool end_of_month) {
    const bool usec = field == "second";
    auto show = [&](int v) {
        if (!usec) return std::to_string(v);
        std::string text = std::to_string(v / kUsecPerSec);
        if (v % kUsecPerSec != 0) {
            std::string digits = std::to_string(v % kUsecPerSec);
            text += "." + std::string(6 - digits.size(), '0') + digits;
        }
        return text;
    };
    for (const auto& c : chain) {
        // With "~", systemd allows 28 days back for the first value, 25 for the second, ...
        if (end_of_month) to -= 3;
        const std::string range = " (" + show(from) + ".." + show(to) + ")";
        if (c.start < from || c.start > to) {
            return std::string(field) + " " + show(c.start) + " is out of range" + range;
        }
        if (c.stop >= 0 && (c.stop < from || c.stop > to)) {
            return std::string(field) + " " + show(c.stop) + " is out of range" + range;
        }
        const bool never_repeats =
            c.repeat > to - from ||
            (c.stop >= 0 ? std::int64_t{c.start} + c.repeat > c.stop
                         : (end_of_month ? c.start - c.repeat < from
                                         : std::int64_t{c.start} + c.repeat > to));
        if (never_repeats) {
            return std::string(field) + " " + show(c.start) + " repeats past its range" + range;
        }
    }
    return {};
}

std::string check(const Spec& spec) {
    for (const auto& [chain, field, from, to, eom] :
         std::array<std::tuple<const Chain*, std::string_view, int, int, bool>, 6>{{
             {&spec.year, "year", kMinYear, kMaxYear, false},
             {&spec.month, "month", 1, 12, false},
             {&spec.day, "day", 1, 31, spec.end_of_month},
             {&spec.hour, "hour", 0, 23, false},
             {&spec.minute, "minute", 0, 59, false},
             {&spec.usec, "second", 0, 60 * kUsecPerSec - 1, false},
         }}) {
        if (auto e = check_chain(*chain, field, from, to, eom); !e.empty()) return e;
    }
    return {};
}

// The message stays one line whatever the expression holds: control characters are escaped.
std::string one_line(std::string_view s) {
    std::string out;
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u != 0x7f) {
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else {
            static constexpr char kHex[] = "0123456789abcdef";
            out += std::string("\\x") + kHex[u >> 4] + kHex[u & 15];
        }
    }
    return out;
}

Result<std::shared_ptr<const Spec>> parse_spec(std::string_view text) {
    auto invalid = [&](const std::string& why) {
        return fail(ErrorKind::invalid_argument,
                    one_line("invalid calendar event '" + std::string(text) + "': " + why) +
                        " (see systemd.time(7), e.g. 'Mon..Fri 22:00', '*:0/15', 'daily')");
    };
    auto spec = std::make_shared<Spec>();
    std::string_view body = text;
    if (body.size() >= 4 && iequals(body.substr(body.size() - 4), " UTC")) {
        spec->utc = true;
        body.remove_suffix(4);
    } else if (auto space = body.rfind(' '); space != std::string_view::npos) {
        const auto name = body.substr(space + 1);
        if (zone_name_valid(name)) {
            spec->zone = TzifZone::load("/usr/share/zoneinfo/" + std::string(name));
            if (!spec->zone) {
                return invalid("cannot use time zone '" + std::string(name) +
                               "' (unreadable, or it counts leap seconds)");
            }
            spec->zone_name = std::string(name);
            body = body.substr(0, space);
        }
    }
    if (body.empty()) return invalid("empty");
    if (!shorthand(body, *spec).empty()) {
        auto& s = *spec;
        s.year.clear(), s.month.clear(), s.day.clear(), s.hour.clear(), s.minute.clear();
        s.usec.clear(), s.weekdays = -1;
        if (auto e = Parser(body, s).parse(); !e.empty()) return invalid(e);
    }
    normalize(*spec);
    if (auto e = check(*spec); !e.empty()) return invalid(e);
    return std::shared_ptr<const Spec>(std::move(spec));
}

// --- normalized form

std::string two_or_four(int width, int v) {
    std::string s = std::to_string(v);
    return std::string(s.size() < static_cast<std::size_t>(width) ? width - s.size() : 0, '0') + s;
}

std::string fraction(int v) {
    return "." + two_or_four(6, v);
}

std::string format_chain(const Chain& chain, int width, bool usec) {
    if (chain.empty()) return "*";
    const int d = usec ? kUsecPerSec : 1;
    // Every second is among the values: the whole list prints as "*".
    if (usec && std::any_of(chain.begin(), chain.end(), [](const Component& c) {
            return c.start == 0 && c.stop < 0 && c.repeat == kUsecPerSec;
        })) {
        return "*";
    }
    std::string out;
    for (const auto& c : chain) {
        if (!out.empty()) out += ',';
        out += two_or_four(width, c.start / d);
        if (c.start % d > 0) out += fraction(c.start % d);
        if (c.stop > 0) out += ".." + two_or_four(width, c.stop / d);
        if (c.stop > 0 && c.stop % d > 0) out += fraction(c.stop % d);
        if (c.repeat > 0 && !(c.stop > 0 && c.repeat == d))
            out += "/" + std::to_string(c.repeat / d);
        if (c.repeat % d > 0) out += fraction(c.repeat % d);
    }
    return out;
}

std::string format_weekdays(int bits) {
    static constexpr std::array<std::string_view, 7> kNames = {"Mon", "Tue", "Wed", "Thu",
                                                               "Fri", "Sat", "Sun"};
    std::string out;
    int x = 0;
    while (x < 7) {
        if (!(bits & (1 << x))) {
            ++x;
            continue;
        }
        int end = x;  // the run of set days x..end
        while (end + 1 < 7 && (bits & (1 << (end + 1)))) ++end;
        if (!out.empty()) out += ',';
        out += kNames[static_cast<std::size_t>(x)];
        if (end == x + 1) out += "," + std::string(kNames[static_cast<std::size_t>(end)]);
        if (end > x + 1) out += ".." + std::string(kNames[static_cast<std::size_t>(end)]);
        x = end + 1;
    }
    return out;
}

// --- the search

struct Cursor {
    Wall wall;
    int usec = 0;
    void clear_from_hour() { wall.hour = wall.minute = wall.second = usec = 0; }
};

// The smallest value of `chain` >= *value: 1 and sets *value when it moved, 0 when *value
// matched, -1 when no value is left. `month_of` gives the month for "~" days.
int match(const Chain& chain, int* value, const Wall* month_of) {
    if (chain.empty()) return 0;
    std::optional<int> best;
    for (const auto& c : chain) {
        int start = c.start;
        int stop = c.stop;
        if (month_of != nullptr) {  // counted back from the month's last day
            const int dim = days_in_month(month_of->year, month_of->month);
            auto from_end = [&](int v) {
                const int day = dim + 1 - v;
                return day >= 1 && day <= dim ? day : -1;
            };
            start = from_end(start);
            stop = from_end(stop);
            if (stop > 0) std::swap(start, stop);
        }
        if (start >= *value) {
            if (!best || start < *best) best = start;
        } else if (c.repeat > 0) {
            const std::int64_t steps = (std::int64_t{*value} - start + c.repeat - 1) / c.repeat;
            const std::int64_t k = start + std::int64_t{c.repeat} * steps;
            if ((!best || k < *best) && (stop < 0 || k <= stop) && k <= 0x7fffffff) {
                best = static_cast<int>(k);
            }
        }
    }
    if (!best) return -1;
    const int moved = *value != *best ? 1 : 0;
    *value = *best;
    return moved;
}

// 1: the wall time exists as written; 0: it did not, and now holds where the search goes on
// from; -1: past the last year, or normalizing went backwards.
// Where it goes on from: the normalized time (Feb 30 → Mar 2, 10:65 → 11:05, a DST gap →
// after it) with the field below the first one that changed reset (Mar 1, 11:00), or the
// values it skipped (Mar 1, 11:01) would be lost.
int within_bounds(Wall& w, Converter& conv) {
    if (w.year > kMaxYear) return -1;
    Wall t = w;
    conv.to_instant(t);
    std::int64_t cmp = 0;
    if ((cmp = t.year - w.year) != 0) {
        t.month = 1;
    } else if ((cmp = t.month - w.month) != 0) {
        t.day = 1;
    } else if ((cmp = t.day - w.day) != 0) {
        t.hour = 0;
    } else if ((cmp = t.hour - w.hour) != 0) {
        t.minute = 0;
    } else if ((cmp = t.minute - w.minute) != 0) {
        t.second = 0;
    } else {
        cmp = t.second - w.second;
    }
    if (cmp < 0) return -1;
    if (cmp == 0) return 1;
    w = t;
    return 0;
}

enum class Step { found, again, never };

// One pass of the search; Step::again after moving `c` on to the next candidate.
Step search_step(const Spec& spec, Converter& conv, Cursor& c) {
    conv.to_instant(c.wall);
    Wall& w = c.wall;
    int year = static_cast<int>(std::min<std::int64_t>(w.year, kMaxYear + 1));
    int r = match(spec.year, &year, nullptr);
    if (r < 0) return Step::never;
    w.year = year;
    if (r > 0) w.month = w.day = 1, c.clear_from_hour();
    if (within_bounds(w, conv) <= 0) return Step::never;

    r = match(spec.month, &w.month, nullptr);
    if (r > 0) w.day = 1, c.clear_from_hour();
    if (r < 0 || (r = within_bounds(w, conv)) < 0) {
        ++w.year, w.month = w.day = 1, c.clear_from_hour();
        return Step::again;
    }
    if (r == 0) return Step::again;

    r = match(spec.day, &w.day, spec.end_of_month ? &w : nullptr);
    if (r > 0) c.clear_from_hour();
    if (r < 0 || (r = within_bounds(w, conv)) < 0) {
        ++w.month, w.day = 1, c.clear_from_hour();
        return Step::again;
    }
    if (r == 0) return Step::again;

    if (spec.weekdays > 0 && !(spec.weekdays & (1 << weekday_of(w)))) {
        ++w.day, c.clear_from_hour();
        return Step::again;
    }

    r = match(spec.hour, &w.hour, nullptr);
    if (r > 0) w.minute = w.second = c.usec = 0;
    if (r < 0 || (r = within_bounds(w, conv)) < 0) {
        ++w.day, c.clear_from_hour();
        return Step::again;
    }
    if (r == 0) return Step::again;  // the hour fell into a DST gap

    r = match(spec.minute, &w.minute, nullptr);
    if (r > 0) w.second = c.usec = 0;
    if (r < 0 || (r = within_bounds(w, conv)) < 0) {
        ++w.hour, w.minute = w.second = c.usec = 0;
        return Step::again;
    }
    if (r == 0) return Step::again;

    int us = w.second * kUsecPerSec + c.usec;
    r = match(spec.usec, &us, nullptr);
    w.second = us / kUsecPerSec;
    c.usec = us % kUsecPerSec;
    if (r < 0 || (r = within_bounds(w, conv)) < 0) {
        ++w.minute, w.second = c.usec = 0;
        return Step::again;
    }
    if (r == 0) return Step::again;
    return Step::found;
}

}  // namespace

CalendarEvent::CalendarEvent(std::string text, std::shared_ptr<const Spec> spec)
    : text_(std::move(text)), spec_(std::move(spec)) {}

Result<CalendarEvent> CalendarEvent::parse(std::string_view text) {
    auto spec = parse_spec(text);
    if (!spec) return fail(spec.error());
    return CalendarEvent(std::string(text), std::move(*spec));
}

std::string CalendarEvent::normalized() const {
    const Spec& s = *spec_;
    std::string out;
    if (s.weekdays > 0 && s.weekdays <= kAllWeekdays) out += format_weekdays(s.weekdays) + " ";
    out += format_chain(s.year, 4, false) + "-" + format_chain(s.month, 2, false);
    out += (s.end_of_month ? "~" : "-") + format_chain(s.day, 2, false) + " ";
    out += format_chain(s.hour, 2, false) + ":" + format_chain(s.minute, 2, false) + ":";
    out += format_chain(s.usec, 2, true);
    if (s.utc)
        out += " UTC";
    else if (!s.zone_name.empty())
        out += " " + s.zone_name;
    return out;
}

std::optional<Clock::time_point> CalendarEvent::next_after(Clock::time_point after) const {
    const Spec& s = *spec_;
    const TimeZone& zone = s.utc ? utc_zone() : s.zone ? *s.zone : local_zone();
    const std::int64_t us =
        std::chrono::floor<std::chrono::microseconds>(after.time_since_epoch()).count() + 1;
    const std::int64_t t = floor_div(us, kUsecPerSec);
    Converter conv(zone, t);
    Cursor c{conv.to_wall(t), static_cast<int>(us - t * kUsecPerSec)};
    if (c.wall.year > kMaxYear) return std::nullopt;
    // Each pass moves the cursor forward, and past kMaxYear the search stops; like systemd we
    // also give up after 1000 passes (its guard against a search that stops moving).
    for (int pass = 0; pass < 1000; ++pass) {
        switch (search_step(s, conv, c)) {
            case Step::never:
                return std::nullopt;
            case Step::again:
                continue;
            case Step::found: {
                const std::int64_t when = conv.to_instant(c.wall);
                return Clock::time_point(std::chrono::seconds(when)) +
                       std::chrono::microseconds(c.usec);
            }
        }
    }
    return std::nullopt;
}

}  // namespace vmshadow::daemon
