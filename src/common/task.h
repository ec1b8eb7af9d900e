// SPDX-License-Identifier: MIT
#pragma once
// The task context: what every long operation (backup, restore, verify, image backup and
// restore, prune, gc, check, repair) is handed so that whoever runs it — the CLI today, the
// daemon tomorrow — can watch it, stop it and keep its log.
//
// This module is:
// - `CancelToken`: a shared flag. Anyone holding a copy may request cancellation (a signal
//   handler too: request() is one lock-free store); the operation checks it between steps
//   and, when set, stops the way a failure does — guest thawed, job ended, nothing half
//   written referenced — and returns ErrorKind::cancelled.
// - `Progress` and `ProgressSink`: the phase the operation is in, bytes and items done out
//   of the total where known. The operation reports facts; rates and ETAs are the sink's.
// - `LogSink`: lines with a level; the sink stamps the time.
// - `TaskContext`: the three plus the clock, with a null sink for whatever the caller does
//   not watch.
// It is not: a scheduler, a thread pool or a task record (the daemon keeps those).
//
// Thread-safety: CancelToken and TaskContext may be used from several threads (copy workers
// report progress concurrently); sinks are called under the context's lock, one at a time.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/error.h"

namespace vmshadow {

class CancelToken {
  public:
    CancelToken() : flag_(std::make_shared<std::atomic<bool>>(false)) {}
    // Async-signal-safe: one atomic store.
    void request() const noexcept { flag_->store(true, std::memory_order_relaxed); }
    bool requested() const noexcept { return flag_->load(std::memory_order_relaxed); }
    // ErrorKind::cancelled naming `what` was interrupted, or success.
    Status check(std::string_view what) const;
    // Sleeps up to `duration`, waking early (within 50 ms) on cancellation; true if cancelled.
    bool sleep_for(std::chrono::milliseconds duration) const;

  private:
    std::shared_ptr<std::atomic<bool>> flag_;
};

struct Progress {
    std::string phase;  // short, stable: "prepare", "freeze", "copy", "commit", "write", ...
    std::string item;   // what the bytes belong to: "web1/vda"; may be empty
    std::uint64_t bytes_done = 0;
    std::uint64_t bytes_total = 0;  // 0: unknown
    std::uint64_t items_done = 0;
    std::uint64_t items_total = 0;  // 0: unknown
};

class ProgressSink {
  public:
    virtual ~ProgressSink() = default;
    virtual void update(const Progress& progress) = 0;
    // The operation ended (successfully or not); the sink may clear a terminal line.
    virtual void finish() {}
};

enum class LogLevel { debug, info, warning, error };
std::string_view log_level_name(LogLevel level);

class LogSink {
  public:
    virtual ~LogSink() = default;
    virtual void write(LogLevel level, std::string_view line) = 0;
};

class TaskContext {
  public:
    // Nothing watched: progress and log go nowhere, a fresh token, the system clock.
    TaskContext();
    TaskContext(ProgressSink* progress, LogSink* log, CancelToken cancel, const Clock& clock);

    const CancelToken& cancel() const { return cancel_; }
    Status check_cancel(std::string_view what) const { return cancel_.check(what); }
    const Clock& clock() const { return *clock_; }

    // Starts a phase (on `item`, when it is about one thing): counts restart from zero.
    void phase(std::string_view name, std::uint64_t bytes_total = 0, std::uint64_t items_total = 0,
               std::string_view item = {});
    void set_item(std::string_view item);
    // Absolute counts within the phase (a copy worker's running total), never decreasing.
    void bytes_done(std::uint64_t done);
    void add_bytes(std::uint64_t delta);
    void set_bytes_total(std::uint64_t total);
    void items_done(std::uint64_t done);
    Progress snapshot() const;

    void log(LogLevel level, std::string_view line) const;
    void info(std::string_view line) const { log(LogLevel::info, line); }
    void warn(std::string_view line) const { log(LogLevel::warning, line); }

  private:
    void publish();  // under mutex_

    ProgressSink* progress_ = nullptr;
    LogSink* log_ = nullptr;
    CancelToken cancel_;
    const Clock* clock_;
    mutable std::mutex mutex_;
    Progress current_;
};

}  // namespace vmshadow
