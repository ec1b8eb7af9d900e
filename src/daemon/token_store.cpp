// SPDX-License-Identifier: MIT
#include "daemon/token_store.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/file.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/enum_names.h"
#include "common/hex.h"
#include "common/os_error.h"
#include "common/private_file.h"
#include "common/unique_fd.h"

// tokens.json, version 1 (names never change):
//   {"version": 1,
//    "tokens": [{"name": "ci", "role": "operator", "created": 1764547200,
//                "secret_sha256": "<64 hex digits: SHA-256 of the SECRET text>"}, ...]}
// Mode 0600, replaced atomically. A change (create, revoke) holds an flock on
// "tokens.json.lock" while it reads the file afresh, changes it and writes it, so two
// processes (the daemon and `vmshadow token create`) never lose each other's change.

namespace vmshadow::daemon {

namespace {

constexpr int kFormatVersion = 1;
constexpr std::size_t kSecretBytes = 32;
constexpr std::size_t kHashHexDigits = 64;
// A real token is at most 63 + 1 + 64 bytes; anything much longer is refused before hashing.
constexpr std::size_t kMaxTokenBytes = 256;

constexpr auto kRoleNames = enum_names<Role>(
    {{Role::audit, "audit"}, {Role::operator_, "operator"}, {Role::admin, "admin"}});

int rank(Role role) {
    switch (role) {
        case Role::audit:
            return 0;
        case Role::operator_:
            return 1;
        case Role::admin:
            return 2;
    }
    return -1;
}

bool valid_name(std::string_view name) {
    auto lower_or_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (name.empty() || name.size() > 63 || !lower_or_digit(name[0])) return false;
    return std::all_of(name.begin(), name.end(),
                       [&](char c) { return lower_or_digit(c) || c == '_' || c == '-'; });
}

std::string to_hex(const unsigned char* data, std::size_t size) {
    return hex_encode({data, size});
}

bool is_hash_hex(std::string_view text) {
    return text.size() == kHashHexDigits && std::all_of(text.begin(), text.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

std::string sha256_hex(std::string_view text) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int size = 0;
    // EVP_Digest with SHA-256 fails only when memory runs out; the empty result then
    // matches no stored hash (authenticate compares lengths first).
    if (EVP_Digest(text.data(), text.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1)
        return {};
    return to_hex(digest.data(), size);
}

Result<std::string> random_secret() {
    std::array<unsigned char, kSecretBytes> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
        return fail(ErrorKind::internal, "the random generator failed (RAND_bytes)");
    return to_hex(bytes.data(), bytes.size());
}

Error bad_file(const std::filesystem::path& file, std::string_view why) {
    return Error(ErrorKind::corruption,
                 file.string() + ": " + std::string(why) + "; fix or remove the file");
}

Result<TokenStore::Entry> parse_entry(const std::filesystem::path& file,
                                      const nlohmann::json& item) {
    if (!item.is_object()) return fail(bad_file(file, "a token is not an object"));
    auto name = item.value("name", "");
    auto role = parse_role(item.value("role", ""));
    auto hash = item.value("secret_sha256", "");
    const auto created = item.find("created");
    if (!valid_name(name)) return fail(bad_file(file, "bad token name '" + name + "'"));
    if (!role) return fail(bad_file(file, "token '" + name + "': unknown role"));
    if (!is_hash_hex(hash)) return fail(bad_file(file, "token '" + name + "': bad secret_sha256"));
    if (created == item.end() || !created->is_number_integer())
        return fail(bad_file(file, "token '" + name + "': bad created time"));
    return TokenStore::Entry{
        .info = {.name = name, .role = *role, .created = created->get<std::int64_t>()},
        .secret_sha256 = hash};
}

// The file's tokens; none when it does not exist; refused when others may read it.
Result<std::vector<TokenStore::Entry>> read_tokens(const std::filesystem::path& file) {
    if (auto ok = check_private_file(file); !ok) {
        if (ok.error().kind() == ErrorKind::not_found) return std::vector<TokenStore::Entry>();
        return fail(ok.error());
    }
    std::ifstream in(file);
    if (!in) return fail(os_error("read " + file.string(), errno));
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object()) return fail(bad_file(file, "not JSON"));
    auto version = json.find("version");
    if (version == json.end() || !version->is_number_integer())
        return fail(bad_file(file, "no format version"));
    if (*version != kFormatVersion) {
        return fail(ErrorKind::unsupported, file.string() + ": format version " + version->dump() +
                                                " is not one this reads (" +
                                                std::to_string(kFormatVersion) + ")");
    }
    auto tokens = json.find("tokens");
    if (tokens == json.end() || !tokens->is_array()) return fail(bad_file(file, "no token list"));
    std::vector<TokenStore::Entry> entries;
    for (const auto& item : *tokens) {
        auto entry = parse_entry(file, item);
        if (!entry) return fail(entry.error());
        for (const auto& seen : entries)
            if (seen.info.name == entry->info.name)
                return fail(bad_file(file, "token '" + seen.info.name + "' twice"));
        entries.push_back(std::move(*entry));
    }
    return entries;
}

// An exclusive flock on "<file>.lock", held while it lives.
Result<UniqueFd> lock_file(const std::filesystem::path& file) {
    std::filesystem::path lock = file;
    lock += ".lock";
    std::error_code ec;
    if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) return fail(os_error("create " + file.parent_path().string(), ec));
    UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return fail(os_error("open " + lock.string(), errno));
    while (::flock(fd.get(), LOCK_EX) != 0) {
        if (errno != EINTR) return fail(os_error("lock " + lock.string(), errno));
    }
    return fd;
}

}  // namespace

std::string_view role_name(Role role) {
    return kRoleNames.name(role);
}

std::optional<Role> parse_role(std::string_view name) {
    return kRoleNames.parse(name);
}

bool role_allows(Role have, Role need) {
    return rank(have) >= rank(need);
}

TokenStore::TokenStore(std::filesystem::path file, const Clock& clock)
    : file_(std::move(file)), clock_(&clock) {}

Result<std::unique_ptr<TokenStore>> TokenStore::open(const std::filesystem::path& file,
                                                     const Clock& clock) {
    auto entries = read_tokens(file);
    if (!entries) return fail(entries.error());
    std::unique_ptr<TokenStore> store(new TokenStore(file, clock));
    store->entries_ = std::move(*entries);
    return store;
}

Result<std::string> TokenStore::create(std::string_view name, Role role) {
    if (!valid_name(name)) {
        return fail(ErrorKind::invalid_argument,
                    "token name '" + std::string(name) +
                        "': use 1 to 63 of a-z, 0-9, '_' and '-', starting with a-z or 0-9");
    }
    std::unique_lock lock(mutex_);
    auto held = lock_file(file_);
    if (!held) return fail(held.error());
    // Afresh under the file lock: another process may have changed the file since we read it.
    auto fresh = read_tokens(file_);
    if (!fresh) return fail(fresh.error());
    entries_ = std::move(*fresh);
    for (const auto& entry : entries_) {
        if (entry.info.name == name) {
            return fail(ErrorKind::conflict,
                        "token '" + std::string(name) + "' exists; revoke it first");
        }
    }
    auto secret = random_secret();
    if (!secret) return fail(secret.error());
    entries_.push_back(Entry{
        .info = {.name = std::string(name), .role = role, .created = unix_seconds(clock_->now())},
        .secret_sha256 = sha256_hex(*secret)});
    if (auto saved = save(); !saved) {
        entries_.pop_back();
        return fail(saved.error());
    }
    return std::string(name) + ":" + *secret;
}

Status TokenStore::revoke(std::string_view name) {
    std::unique_lock lock(mutex_);
    auto held = lock_file(file_);
    if (!held) return fail(held.error());
    auto fresh = read_tokens(file_);
    if (!fresh) return fail(fresh.error());
    entries_ = std::move(*fresh);
    auto found = std::find_if(entries_.begin(), entries_.end(),
                              [&](const Entry& e) { return e.info.name == name; });
    if (found == entries_.end())
        return fail(ErrorKind::not_found, "token '" + std::string(name) + "' not found");
    Entry removed = std::move(*found);
    auto at = entries_.erase(found);
    if (auto saved = save(); !saved) {
        entries_.insert(at, std::move(removed));
        return saved;
    }
    return {};
}

std::vector<TokenInfo> TokenStore::list() const {
    std::shared_lock lock(mutex_);
    std::vector<TokenInfo> infos;
    for (const auto& entry : entries_) infos.push_back(entry.info);
    return infos;
}

std::optional<TokenInfo> TokenStore::authenticate(std::string_view token) const {
    if (token.size() > kMaxTokenBytes) return std::nullopt;
    auto colon = token.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view name = token.substr(0, colon);
    std::string digest = sha256_hex(token.substr(colon + 1));
    // An unknown name still costs one comparison, against a hash no secret has (not hex).
    static const std::string kDummy(kHashHexDigits, 'x');

    std::shared_lock lock(mutex_);
    const Entry* found = nullptr;
    for (const auto& entry : entries_)
        if (entry.info.name == name) found = &entry;
    const std::string& expected = found ? found->secret_sha256 : kDummy;
    bool same = expected.size() == digest.size() &&
                CRYPTO_memcmp(expected.data(), digest.data(), digest.size()) == 0;
    if (found == nullptr || !same) return std::nullopt;
    return found->info;
}

Status TokenStore::reload() {
    auto fresh = read_tokens(file_);
    if (!fresh) return fail(fresh.error());
    std::unique_lock lock(mutex_);
    entries_ = std::move(*fresh);
    return {};
}

Status TokenStore::save() const {
    nlohmann::json tokens = nlohmann::json::array();
    for (const auto& entry : entries_) {
        tokens.push_back({{"name", entry.info.name},
                          {"role", role_name(entry.info.role)},
                          {"created", entry.info.created},
                          {"secret_sha256", entry.secret_sha256}});
    }
    nlohmann::json doc{{"version", kFormatVersion}, {"tokens", std::move(tokens)}};
    return write_file_atomically(file_, doc.dump(2) + "\n", 0600);
}

}  // namespace vmshadow::daemon
