// SPDX-License-Identifier: MIT
#include "common/clock.h"

#include <thread>

namespace vmshadow {

Clock::time_point SystemClock::now() const {
    return std::chrono::system_clock::now();
}

void SystemClock::sleep_until(time_point when) const {
    std::this_thread::sleep_until(when);
}

const Clock& system_clock() {
    static const SystemClock clock;
    return clock;
}

Clock::time_point ManualClock::now() const {
    return time_point(std::chrono::system_clock::duration(now_.load()));
}

void ManualClock::sleep_until(time_point when) const {
    auto target = when.time_since_epoch().count();
    auto current = now_.load();
    while (current < target && !now_.compare_exchange_weak(current, target)) {
    }
}

void ManualClock::set(time_point when) {
    now_.store(when.time_since_epoch().count());
}

void ManualClock::advance(std::chrono::system_clock::duration by) {
    now_.fetch_add(by.count());
}

}  // namespace vmshadow
