// SPDX-License-Identifier: MIT
#pragma once
// EventDeadline: when the coordinator stops waiting for a writer's (or the provider's)
// answer to an event, plus a cancellation token it trips at that moment.
//
// How timeouts work (the coordinator's side): each writer's event runs on its own worker
// thread. The coordinator waits until the deadline; a call that has not returned by then
// has failed at that event with FailureCode::timeout, the coordinator requests stop on the
// token and moves on (to Abort). The late call is abandoned: whatever it returns later is
// ignored; it keeps its writer and its EventContext alive (shared ownership), so it never
// touches freed memory.
// What a writer should do: treat the deadline as binding. Pass `at()` / `remaining()` to
// blocking calls that take a timeout, check `stop_requested()` between steps, and return
// promptly once it is reached (the exec writer kills its command's process group then).
// A writer that overruns may receive Abort while its timed-out call is still running.
//
// Thread-safety: copies share the stop state; every member is safe from any thread.

#include <chrono>
#include <stop_token>

namespace vmshadow::vss {

class EventDeadline {
  public:
    using clock = std::chrono::steady_clock;

    EventDeadline() : at_(clock::time_point::max()) {}
    EventDeadline(clock::time_point at, std::stop_token stop) : at_(at), stop_(std::move(stop)) {}
    static EventDeadline after(std::chrono::milliseconds limit, std::stop_token stop = {}) {
        return EventDeadline(clock::now() + limit, std::move(stop));
    }

    clock::time_point at() const { return at_; }
    std::chrono::milliseconds remaining() const {
        auto left = at_ - clock::now();
        if (left <= clock::duration::zero()) return std::chrono::milliseconds(0);
        return std::chrono::ceil<std::chrono::milliseconds>(left);
    }
    bool expired() const { return clock::now() >= at_; }
    // True once the coordinator gave up on this call (deadline passed or backup aborted).
    bool stop_requested() const { return stop_.stop_requested(); }
    // The end of the call: deadline passed or stop requested.
    bool over() const { return expired() || stop_requested(); }
    const std::stop_token& stop_token() const { return stop_; }

  private:
    clock::time_point at_;
    std::stop_token stop_;
};

}  // namespace vmshadow::vss
