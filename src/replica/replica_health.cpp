// SPDX-License-Identifier: MIT
#include "replica/replica_health.h"

#include <algorithm>

namespace vmshadow::replica {

namespace {
constexpr auto kHour = std::chrono::hours(1);
constexpr auto kKeep = std::chrono::hours(24);
constexpr std::size_t kMaxRecords = 4096;

double seconds_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}
}  // namespace

void trim_history(std::deque<CycleRecord>& cycles, Clock::time_point now) {
    while (!cycles.empty() && (cycles.size() > kMaxRecords || now - cycles.front().started > kKeep))
        cycles.pop_front();
}

Health compute_health(const HealthInput& input, Clock::time_point now) {
    Health h;
    std::optional<Clock::time_point> newest_point;
    unsigned timed = 0;
    double total_s = 0;
    for (const auto& c : input.cycles) {
        h.bytes_sent += c.bytes_sent;
        if (c.result == CycleRecord::Result::missed) {
            ++h.missed_total;
        } else {
            ++timed;
            total_s += c.seconds;
            h.max_cycle_s = std::max(h.max_cycle_s, c.seconds);
        }
        if (c.result == CycleRecord::Result::ok) {
            auto end = c.started + std::chrono::duration_cast<Clock::time_point::duration>(
                                       std::chrono::duration<double>(c.seconds));
            if (!h.last_success || end > *h.last_success) h.last_success = end;
            if (c.point_time && (!newest_point || *c.point_time > *newest_point))
                newest_point = c.point_time;
        }
        if (now - c.started <= kHour) {
            ++h.cycles_last_hour;
            if (c.result != CycleRecord::Result::ok) ++h.missed_last_hour;
        }
    }
    if (timed) h.avg_cycle_s = total_s / timed;
    if (newest_point) h.rpo_s = std::max(0.0, seconds_between(*newest_point, now));

    const std::string& link = input.link_state;
    if (link == "paused" || link == "resync-required" || link == "failed-over" ||
        link == "initial" || link == "test-failover") {
        h.state = link;
        return h;
    }
    const bool recent_success = h.last_success && now - *h.last_success <= kHour;
    const bool last_failed =
        !input.cycles.empty() && input.cycles.back().result == CycleRecord::Result::failed;
    if (last_failed && !recent_success) {
        h.state = "critical";
        h.reason = h.last_success ? "no cycle succeeded in the last hour and the last one failed"
                                  : "no cycle has succeeded and the last one failed";
        return h;
    }
    if (last_failed) {
        h.state = "warning";
        h.reason = "the last cycle failed; the next one sends its changes";
        return h;
    }
    // Hyper-V's rule: more than 20 % of the last hour's cycles missed, or none succeeded for an
    // hour (only once the link has existed that long: the first cycle's start stands in).
    const bool old_enough = !input.cycles.empty() && now - input.cycles.front().started >= kHour;
    if (h.cycles_last_hour > 0 && h.missed_last_hour * 5 > h.cycles_last_hour) {
        h.state = "warning";
        h.reason = std::to_string(h.missed_last_hour) + " of the last hour's " +
                   std::to_string(h.cycles_last_hour) + " cycles were missed or failed";
        return h;
    }
    if (old_enough && !recent_success) {
        h.state = "warning";
        h.reason = "no cycle succeeded for an hour";
        return h;
    }
    h.state = "normal";
    return h;
}

}  // namespace vmshadow::replica
