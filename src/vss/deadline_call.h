// SPDX-License-Identifier: MIT
#pragma once
// DeadlineCall: runs one blocking call on a worker thread and waits for it until a deadline.
//
// This module is: how the coordinator enforces per-event time limits on code it does not
// control (writers, providers). start() launches `body` on a detached thread; wait_until()
// returns its value, or nullopt at the deadline, after requesting stop on the call's
// stop_source (which the body sees through its EventDeadline). A call that misses its
// deadline is abandoned, not killed: the body must own everything it touches (capture
// shared_ptrs and values, never references to the caller's stack), and its late result is
// dropped when the last owner lets go.
// This module is not: a thread pool. One thread per call is cheap next to what writers do
// (agent round trips, fork/exec).
//
// Thread-safety: one thread calls wait_until(); the body runs on its own thread.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <system_error>
#include <thread>

namespace vmshadow::vss {

template <typename T>
class DeadlineCall {
  public:
    using clock = std::chrono::steady_clock;

    // `fallback` is returned when a thread cannot be started.
    static DeadlineCall start(std::function<T()> body, std::stop_source stop, T fallback) {
        DeadlineCall call(std::move(stop));
        try {
            std::thread([state = call.state_, body = std::move(body)]() mutable {
                T value = body();
                {
                    std::lock_guard lock(state->mutex);
                    state->value.emplace(std::move(value));
                }
                state->done.notify_all();
            }).detach();
        } catch (const std::system_error&) {
            std::lock_guard lock(call.state_->mutex);
            call.state_->value.emplace(std::move(fallback));
        }
        return call;
    }

    // The value, or nullopt if `deadline` passed first (stop is then requested).
    std::optional<T> wait_until(clock::time_point deadline) {
        std::unique_lock lock(state_->mutex);
        if (!state_->done.wait_until(lock, deadline, [&] { return state_->value.has_value(); })) {
            stop_.request_stop();
            return std::nullopt;
        }
        return std::move(state_->value);
    }

  private:
    struct State {
        std::mutex mutex;
        std::condition_variable done;
        std::optional<T> value;
    };

    explicit DeadlineCall(std::stop_source stop)
        : state_(std::make_shared<State>()), stop_(std::move(stop)) {}

    std::shared_ptr<State> state_;
    std::stop_source stop_;
};

}  // namespace vmshadow::vss
