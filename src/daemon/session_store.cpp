// SPDX-License-Identifier: MIT
#include "daemon/session_store.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <stdexcept>

#include "common/hex.h"

namespace vmshadow::daemon {
namespace {

std::string random_hex() {
    std::array<unsigned char, 32> bytes{};
    // Without randomness there is no safe session: fail loudly (the route answers 500).
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
        throw std::runtime_error("RAND_bytes failed");
    std::string out = hex_encode(bytes);
    OPENSSL_cleanse(bytes.data(), bytes.size());
    return out;
}

}  // namespace

bool equal_secret(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::int64_t Session::expires() const {
    return std::min(last_used + kSessionIdle.count(), created + kSessionAbsolute.count());
}

SessionStore::SessionStore(const Clock& clock, std::size_t max_sessions)
    : clock_(&clock), max_(std::max<std::size_t>(max_sessions, 1)) {}

void SessionStore::drop_expired(std::int64_t now) {
    std::erase_if(sessions_, [now](const Session& s) { return now >= s.expires(); });
}

Session SessionStore::create(const TokenInfo& token) {
    const std::int64_t now = unix_seconds(clock_->now());
    Session s{random_hex(), random_hex(), token.name, token.role, now, now};
    std::lock_guard lock(mutex_);
    drop_expired(now);
    while (sessions_.size() >= max_) sessions_.erase(sessions_.begin());
    sessions_.push_back(s);
    return s;
}

std::optional<Session> SessionStore::find(std::string_view id) {
    const std::int64_t now = unix_seconds(clock_->now());
    std::lock_guard lock(mutex_);
    drop_expired(now);
    // Every held id is compared (no early exit): the time taken says nothing about a match.
    Session* found = nullptr;
    for (auto& s : sessions_)
        if (equal_secret(s.id, id)) found = &s;
    if (!found) return std::nullopt;
    found->last_used = now;
    return *found;
}

bool SessionStore::remove(std::string_view id) {
    std::lock_guard lock(mutex_);
    return std::erase_if(sessions_, [&](const Session& s) { return equal_secret(s.id, id); }) > 0;
}

void SessionStore::remove_token(std::string_view name) {
    std::lock_guard lock(mutex_);
    std::erase_if(sessions_, [&](const Session& s) { return s.name == name; });
}

std::size_t SessionStore::size() const {
    std::lock_guard lock(mutex_);
    return sessions_.size();
}

}  // namespace vmshadow::daemon
