// SPDX-License-Identifier: MIT
#pragma once
// TokenStore: the API's bearer tokens and their roles, kept in <state-dir>/tokens.json.
//
// A token is "NAME:SECRET" (SECRET: 32 random bytes, hex). Only SHA-256(SECRET) is stored;
// the secret is shown once, at creation. Authentication looks the name up and compares the
// hashes in constant time (CRYPTO_memcmp), so neither a wrong name nor a wrong secret is
// told apart by timing of the comparison. The file is written atomically with mode 0600, and
// a file readable by others is refused (the daemon does not start).
//
// Roles, from least to most: audit (reads everything but secrets), operator (also runs jobs,
// restores, verifies, aborts tasks), admin (also edits jobs and tokens).
//
// It is not: the route → role table (api_routes.h) or TLS client certificates.
//
// Thread-safety: every method may be called from any thread (a mutex; authenticate takes
// it shared). Changes through another TokenStore on the same file are seen after reload().

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"

namespace vmshadow::daemon {

enum class Role { audit, operator_, admin };
std::string_view role_name(Role role);  // "audit", "operator", "admin"
std::optional<Role> parse_role(std::string_view name);
// True when `have` includes the rights of `need` (admin ⊇ operator ⊇ audit).
bool role_allows(Role have, Role need);

struct TokenInfo {
    std::string name;  // [a-z0-9][a-z0-9_-]{0,62}
    Role role = Role::audit;
    std::int64_t created = 0;  // unix s
};

class TokenStore {
  public:
    // Opens <file> (missing: empty); permission error when it is readable by others.
    static Result<std::unique_ptr<TokenStore>> open(const std::filesystem::path& file,
                                                    const Clock& clock);

    // The whole token, "NAME:SECRET" — shown once. conflict when the name exists.
    Result<std::string> create(std::string_view name, Role role);
    Status revoke(std::string_view name);  // not_found when absent
    std::vector<TokenInfo> list() const;
    // The token's info when `token` ("NAME:SECRET") is valid.
    std::optional<TokenInfo> authenticate(std::string_view token) const;
    Status reload();

    struct Entry {
        TokenInfo info;
        std::string secret_sha256;  // hex
    };

  private:
    TokenStore(std::filesystem::path file, const Clock& clock);
    Status save() const;  // under an exclusive lock

    std::filesystem::path file_;
    const Clock* clock_;
    mutable std::shared_mutex mutex_;
    std::vector<Entry> entries_;
};

}  // namespace vmshadow::daemon
