// SPDX-License-Identifier: MIT
#pragma once
// Key files: the repository's master key, wrapped once per password.
//
// This module is: creating, opening, listing and removing key files under keys/. Each key
// file wraps the same master key (MasterKey, codec.h) with a key derived from one password
// by scrypt, so several passwords open one repository and a password changes without
// rewriting any data. It is not: prompting for passwords (the CLI does that).
//
// Key file (JSON, never change field meanings):
//   {"format_version":1, "kdf":"scrypt", "n":…, "r":…, "p":…, "salt":<hex 32 bytes>,
//    "sealed":<hex GCM-seal(encryption key[32] | id key[32]), associated data "vmshadow-key">,
//    "created":<ISO 8601>, "host":…}
// The file name is a random 32-hex-digit id.
//
// Thread-safety: free functions, reentrant.

#include <string>
#include <vector>

#include "common/error.h"
#include "repo/codec.h"
#include "repo/env.h"

namespace vmshadow::repo {

Result<MasterKey> new_master_key();

// Writes a new key file for `password`; returns its id.
Result<std::string> add_key(Env& env, const std::string& root, const MasterKey& key,
                            std::string_view password, const ScryptParams& params);

struct OpenedKey {
    MasterKey key;
    std::string key_id;  // the key file the password opened
};
// Tries every key file; ErrorKind::permission when none opens with this password.
Result<OpenedKey> open_key(Env& env, const std::string& root, std::string_view password);

Result<std::vector<std::string>> list_keys(Env& env, const std::string& root);
Status remove_key(Env& env, const std::string& root, const std::string& key_id);

}  // namespace vmshadow::repo
