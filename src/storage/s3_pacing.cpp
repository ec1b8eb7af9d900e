// SPDX-License-Identifier: MIT
#include "storage/s3_pacing.h"

#include <algorithm>
#include <cmath>

namespace vmshadow::storage {

double backoff_delay(const RetryPolicy& policy, int retry, double random01) {
    double exponent = std::min(retry - 1, 30);
    double full = std::min(policy.max_delay_seconds,
                           policy.first_delay_seconds * std::pow(2.0, std::max(0.0, exponent)));
    random01 = std::clamp(random01, 0.0, 1.0);
    return full / 2 + full / 2 * random01;
}

std::optional<double> next_retry_delay(const RetryPolicy& policy, int retry, double slept_so_far,
                                       double random01) {
    if (retry + 1 > policy.max_attempts) return std::nullopt;
    double delay = backoff_delay(policy, retry, random01);
    if (slept_so_far + delay > policy.max_total_seconds) return std::nullopt;
    return delay;
}

TokenBucket::TokenBucket(double rate, double burst)
    : rate_(rate), burst_(std::max(burst, 1.0)), tokens_(burst_) {}

double TokenBucket::reserve(double tokens, double now_seconds) {
    std::lock_guard lock(mutex_);
    if (last_) tokens_ = std::min(burst_, tokens_ + std::max(0.0, now_seconds - *last_) * rate_);
    last_ = std::max(now_seconds, last_.value_or(now_seconds));
    tokens_ -= tokens;
    return tokens_ >= 0 ? 0.0 : -tokens_ / rate_;
}

}  // namespace vmshadow::storage
