// SPDX-License-Identifier: MIT
#pragma once
// Replica health: Hyper-V Replica's rule for one VM's replication, from its cycle history.
//
// This module is (pure, unit-tested with a manual clock):
//   state: paused / resync-required / failed-over / initial as the link says; otherwise
//   critical when the last cycle failed and no cycle succeeded within the last hour (or
//   ever), warning when the last cycle failed (until one succeeds), when more than 20 % of the
//   last hour's cycles were missed or failed, or no
//   cycle succeeded for an hour (Hyper-V's rule), else normal; RPO now = now − the primary's
//   read instant of the newest point the replica committed; average and maximum cycle time
//   and bytes sent over the kept history (the last 24 h, at most 4096 cycles).
// It is not: where the history is stored (the link record) or how it is shown.
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "common/clock.h"

namespace vmshadow::replica {

struct CycleRecord {
    Clock::time_point started;
    double seconds = 0;
    std::uint64_t bytes_sent = 0;
    enum class Result { ok, failed, missed } result = Result::ok;
    std::optional<Clock::time_point> point_time;  // the instant the committed point equals
};

struct HealthInput {
    std::string link_state;          // "normal" (replicating), "paused", "resync-required", ...
    std::deque<CycleRecord> cycles;  // oldest first
    std::chrono::seconds interval{300};
};

struct Health {
    std::string
        state;  // normal | warning | critical | paused | resync-required | failed-over | initial
    std::optional<double> rpo_s;
    std::optional<Clock::time_point> last_success;
    double avg_cycle_s = 0, max_cycle_s = 0;
    std::uint64_t bytes_sent = 0;
    unsigned missed_last_hour = 0, cycles_last_hour = 0, missed_total = 0;
    std::string reason;  // why warning/critical, for people
};

Health compute_health(const HealthInput& input, Clock::time_point now);

// Keeps at most 24 h and 4096 records.
void trim_history(std::deque<CycleRecord>& cycles, Clock::time_point now);

}  // namespace vmshadow::replica
