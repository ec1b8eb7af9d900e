// SPDX-License-Identifier: MIT
#include "common/task.h"

#include <algorithm>
#include <thread>

#include "common/enum_names.h"

namespace vmshadow {

Status CancelToken::check(std::string_view what) const {
    if (!requested()) return {};
    return fail(ErrorKind::cancelled, std::string(what) + ": cancelled");
}

bool CancelToken::sleep_for(std::chrono::milliseconds duration) const {
    // Polled rather than signalled: request() must stay async-signal-safe, which rules out
    // a condition variable.
    auto end = std::chrono::steady_clock::now() + duration;
    while (!requested()) {
        auto left = end - std::chrono::steady_clock::now();
        if (left <= std::chrono::steady_clock::duration::zero()) return false;
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(50)));
    }
    return true;
}

std::string_view log_level_name(LogLevel level) {
    static constexpr auto kNames = enum_names<LogLevel>({{LogLevel::debug, "debug"},
                                                         {LogLevel::info, "info"},
                                                         {LogLevel::warning, "warning"},
                                                         {LogLevel::error, "error"}},
                                                        "info");
    return kNames.name(level);
}

TaskContext::TaskContext() : clock_(&system_clock()) {}

TaskContext::TaskContext(ProgressSink* progress, LogSink* log, CancelToken cancel,
                         const Clock& clock)
    : progress_(progress), log_(log), cancel_(std::move(cancel)), clock_(&clock) {}

void TaskContext::publish() {
    if (progress_) progress_->update(current_);
}

void TaskContext::phase(std::string_view name, std::uint64_t bytes_total, std::uint64_t items_total,
                        std::string_view item) {
    std::lock_guard lock(mutex_);
    current_ = Progress{.phase = std::string(name),
                        .item = std::string(item),
                        .bytes_total = bytes_total,
                        .items_total = items_total};
    publish();
}

void TaskContext::set_item(std::string_view item) {
    std::lock_guard lock(mutex_);
    current_.item = std::string(item);
    publish();
}

void TaskContext::bytes_done(std::uint64_t done) {
    std::lock_guard lock(mutex_);
    if (done <= current_.bytes_done) return;
    current_.bytes_done = done;
    publish();
}

void TaskContext::add_bytes(std::uint64_t delta) {
    std::lock_guard lock(mutex_);
    current_.bytes_done += delta;
    publish();
}

void TaskContext::set_bytes_total(std::uint64_t total) {
    std::lock_guard lock(mutex_);
    current_.bytes_total = total;
    publish();
}

void TaskContext::items_done(std::uint64_t done) {
    std::lock_guard lock(mutex_);
    current_.items_done = done;
    publish();
}

Progress TaskContext::snapshot() const {
    std::lock_guard lock(mutex_);
    return current_;
}

void TaskContext::log(LogLevel level, std::string_view line) const {
    std::lock_guard lock(mutex_);
    if (log_) log_->write(level, line);
}

}  // namespace vmshadow
