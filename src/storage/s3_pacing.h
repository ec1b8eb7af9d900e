// SPDX-License-Identifier: MIT
#pragma once
// Pacing of S3 requests: the retry schedule (exponential backoff with jitter, bounded in
// count and total time) and the token buckets behind the optional request-rate and bandwidth
// caps. Kept free of clocks and randomness (callers pass them in) so tests can pin them.
//
// Thread-safety: backoff functions are pure; TokenBucket::reserve locks internally.

#include <cstdint>
#include <mutex>
#include <optional>

namespace vmshadow::storage {

struct RetryPolicy {
    int max_attempts = 8;            // the first attempt included
    double max_total_seconds = 300;  // the sum of the delays
    double first_delay_seconds = 0.1;
    double max_delay_seconds = 10;
};

// The delay before retry number `retry` (1 = the second attempt): first_delay * 2^(retry-1),
// capped at max_delay, scaled by "equal jitter" into [d/2, d] by `random01` in [0, 1).
double backoff_delay(const RetryPolicy& policy, int retry, double random01);

// Whether retry number `retry` may happen, given the delays already slept and the one it
// would sleep now: nullopt when the attempts or the total time are used up.
std::optional<double> next_retry_delay(const RetryPolicy& policy, int retry, double slept_so_far,
                                       double random01);

// A token bucket: `rate` tokens a second, at most `burst` saved up. reserve(n, now) takes n
// tokens (the bucket may go into debt) and returns how long the caller must wait before it
// uses them, so concurrent callers queue up fairly without holding a lock while they sleep.
class TokenBucket {
  public:
    TokenBucket(double rate, double burst);
    double reserve(double tokens, double now_seconds);
    double rate() const { return rate_; }
    double burst() const { return burst_; }

  private:
    std::mutex mutex_;
    double rate_;
    double burst_;
    double tokens_;
    std::optional<double> last_;
};

}  // namespace vmshadow::storage
