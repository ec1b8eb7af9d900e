// SPDX-License-Identifier: MIT
#include "daemon/time_zone.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <ctime>
#include <fstream>
#include <iterator>
#include <optional>
#include <string_view>
#include <vector>

namespace vmshadow::daemon::tz {

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

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

int weekday_of(const Wall& w) {
    const std::int64_t days = days_from_civil(w.year, w.month, w.day);
    return static_cast<int>(((days + 3) % 7 + 7) % 7);
}

namespace {

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

}  // namespace

std::int64_t Converter::to_instant(Wall& w) {
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

const TimeZone& utc_zone() {
    static const UtcZone zone;
    return zone;
}

const TimeZone& local_zone() {
    static const LocalZone zone;
    return zone;
}

std::shared_ptr<const TimeZone> load_tzif(const std::string& path) {
    return TzifZone::load(path);
}

}  // namespace vmshadow::daemon::tz
