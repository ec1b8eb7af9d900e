// SPDX-License-Identifier: MIT
#pragma once
// Ctrl-C and `kill` as a clean cancel: while an `InterruptGuard` lives, the first SIGINT or
// SIGTERM requests cancellation of its token (the running operation then stops the way a
// failure does: guest thawed, job ended, nothing half written kept) and says so on stderr;
// a second one exits at once with 130 (SIGINT) or 143 (SIGTERM), leaving the cleanup to the
// next run's leftover recovery, as after `kill -9`. The previous handlers come back when the
// guard goes away.
//
// Thread-safety: one guard per process at a time.

#include <csignal>

#include "common/task.h"

namespace vmshadow::cli {

class InterruptGuard {
  public:
    explicit InterruptGuard(CancelToken token);
    ~InterruptGuard();
    InterruptGuard(const InterruptGuard&) = delete;
    InterruptGuard& operator=(const InterruptGuard&) = delete;

    // The signal that requested cancellation, 0 if none came.
    int signal() const;

  private:
    struct sigaction old_int_ {
    }, old_term_{};
};

}  // namespace vmshadow::cli
