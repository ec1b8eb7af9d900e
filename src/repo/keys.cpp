// SPDX-License-Identifier: MIT
#include "repo/keys.h"

#include <unistd.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "common/hex.h"
#include "repo/format.h"
#include "repo/manifest.h"

namespace vmshadow::repo {
namespace {

constexpr std::string_view kKeyAad = "vmshadow-key";

std::string to_hex(ByteView b) {
    return hex_encode(b);
}

std::optional<Bytes> from_hex(std::string_view s) {
    return hex_decode(s);
}

std::string keys_dir(const std::string& root) {
    return root + "/" + std::string(format::kKeysDir);
}

}  // namespace

Result<MasterKey> new_master_key() {
    auto encryption = random_bytes(32);
    if (!encryption) return std::unexpected(encryption.error());
    auto id_key = random_bytes(32);
    if (!id_key) return std::unexpected(id_key.error());
    return MasterKey{std::move(*encryption), std::move(*id_key)};
}

Result<std::string> add_key(Env& env, const std::string& root, const MasterKey& key,
                            std::string_view password, const ScryptParams& params) {
    auto random_salt = random_bytes(32);
    if (!random_salt) return std::unexpected(random_salt.error());
    const Bytes& salt = *random_salt;
    auto kek = scrypt(password, salt, params, 32);
    if (!kek) return std::unexpected(kek.error());
    Bytes plain = key.encryption;
    plain.insert(plain.end(), key.id_key.begin(), key.id_key.end());
    Bytes sealed;
    gcm_seal(*kek, plain, as_bytes(kKeyAad), sealed);
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    nlohmann::json j{{"format_version", 1},
                     {"kdf", "scrypt"},
                     {"n", params.n},
                     {"r", params.r},
                     {"p", params.p},
                     {"salt", to_hex(salt)},
                     {"sealed", to_hex(sealed)},
                     {"created", iso8601_utc(::time(nullptr))},
                     {"host", host}};
    auto random_id = random_bytes(16);
    if (!random_id) return std::unexpected(random_id.error());
    std::string id = to_hex(*random_id);
    std::string text = j.dump(2);
    if (auto st = write_file_atomic(env, root + "/" + std::string(format::kTmpDir), keys_dir(root),
                                    id, as_bytes(text));
        !st)
        return std::unexpected(st.error());
    return id;
}

Result<std::vector<std::string>> list_keys(Env& env, const std::string& root) {
    return env.list(keys_dir(root));
}

Result<OpenedKey> open_key(Env& env, const std::string& root, std::string_view password) {
    auto ids = list_keys(env, root);
    if (!ids) return std::unexpected(ids.error());
    if (ids->empty())
        return fail(ErrorKind::corruption,
                    "encrypted repository has no key files in " + keys_dir(root));
    std::vector<std::string> damaged;
    for (const auto& id : *ids) {
        auto bytes = read_file(env, keys_dir(root) + "/" + id);
        if (!bytes) continue;
        nlohmann::json j = nlohmann::json::parse(bytes->begin(), bytes->end(), nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("salt") || !j.contains("sealed")) {
            damaged.push_back(id);
            continue;
        }
        std::optional<Bytes> salt, sealed;
        ScryptParams params;
        try {  // value() throws on a field of the wrong type: a damaged key file
            salt = from_hex(j.value("salt", ""));
            sealed = from_hex(j.value("sealed", ""));
            params = {j.value("n", std::uint64_t{0}), j.value("r", 0u), j.value("p", 0u)};
        } catch (const nlohmann::json::exception&) {
            salt.reset();
        }
        if (!salt || !sealed) {
            damaged.push_back(id);
            continue;
        }
        auto kek = scrypt(password, *salt, params, 32);
        if (!kek) {
            damaged.push_back(id);
            continue;
        }
        auto plain = gcm_open(*kek, *sealed, as_bytes(kKeyAad));
        if (!plain || plain->size() != 64) continue;  // another password's key
        OpenedKey out;
        out.key.encryption.assign(plain->begin(), plain->begin() + 32);
        out.key.id_key.assign(plain->begin() + 32, plain->end());
        out.key_id = id;
        return out;
    }
    std::string msg = "wrong password: it opens none of the repository's " +
                      std::to_string(ids->size()) + " key(s)";
    if (!damaged.empty()) msg += " (damaged key files: " + damaged.front() + "…)";
    return fail(ErrorKind::permission, msg);
}

Status remove_key(Env& env, const std::string& root, const std::string& key_id) {
    std::string path = keys_dir(root) + "/" + key_id;
    if (!env.exists(path)) return fail(ErrorKind::not_found, "no key " + key_id);
    if (auto st = env.remove(path); !st) return st;
    return env.sync_dir(keys_dir(root));
}

}  // namespace vmshadow::repo
