// SPDX-License-Identifier: MIT
#pragma once
// SessionStore: the dashboard's browser sessions. A browser signs in once with an API token
// (POST /api/v1/session) and then holds a session cookie (HttpOnly, Secure, SameSite=Strict)
// instead of the token; state-changing requests also carry the session's CSRF value in the
// X-CSRF-Token header (api_routes.h checks it).
//
// A session id and its CSRF value are 32 random bytes (RAND_bytes), hex. Lookups compare the
// presented id with every held one in constant time (CRYPTO_memcmp), so timing does not tell
// how much of an id was right. A session ends 30 minutes after its last use or 8 hours after
// sign-in, whichever comes first; at most `max_sessions` are held (the oldest is dropped for a
// new one). Revoking a token ends every session signed in with it.
//
// It is not: persistent (a restart signs everyone out) or the token check (token_store.h).
//
// Thread-safety: every method may be called from any thread (a mutex).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "daemon/token_store.h"

namespace vmshadow::daemon {

struct Session {
    std::string id;    // the cookie's value (64 hex digits)
    std::string csrf;  // the X-CSRF-Token value (64 hex digits)
    std::string name;  // the token's name
    Role role = Role::audit;
    std::int64_t created = 0;    // unix s
    std::int64_t last_used = 0;  // unix s
    // When it ends unless used again: min(last_used + idle, created + absolute).
    std::int64_t expires() const;
};

inline constexpr std::chrono::seconds kSessionIdle{30 * 60};
inline constexpr std::chrono::seconds kSessionAbsolute{8 * 3600};
inline constexpr std::size_t kMaxSessions = 1000;

class SessionStore {
  public:
    explicit SessionStore(const Clock& clock, std::size_t max_sessions = kMaxSessions);

    // A new session for a signed-in token.
    Session create(const TokenInfo& token);
    // The live session with this id (its last use now), or nullopt (unknown or expired).
    std::optional<Session> find(std::string_view id);
    // Ends the session (sign-out); false when there was none.
    bool remove(std::string_view id);
    // Ends every session of the token `name` (the token was revoked).
    void remove_token(std::string_view name);
    std::size_t size() const;

  private:
    void drop_expired(std::int64_t now);  // with mutex_ held

    const Clock* clock_;
    std::size_t max_;
    mutable std::mutex mutex_;
    std::vector<Session> sessions_;  // oldest first
};

// True when a and b are equal, in time that depends only on their lengths.
bool equal_secret(std::string_view a, std::string_view b);

}  // namespace vmshadow::daemon
