// SPDX-License-Identifier: MIT
#pragma once
// StorageOptions: how a repository on object storage is reached (OpenOptions, InitOptions).
//
// This module is: the options the CLI, the daemon and the nbdkit plugin pass down for an
// "s3:…" location, in plain types so callers need not know the storage layer. They are
// ignored for a local path. It is not: the S3 client (storage/s3_blob_store.h).
//
// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION (and
// AWS_SESSION_TOKEN) when set, else from `credentials_file`, else from the file named by
// $VMSHADOW_S3_CREDENTIALS (TOML: access_key_id, secret_access_key, region; only its owner
// may read it). Secrets are never command-line arguments, so child processes (the nbdkit
// plugin) get the file's path or inherit the environment.
//
// Thread-safety: plain data.

#include <cstdint>
#include <functional>
#include <string>

namespace vmshadow::repo {

struct StorageOptions {
    std::string credentials_file;
    std::string ca_file;          // a PEM CA for the endpoint's certificate; "" = the system's
    bool virtual_hosted = false;  // https://bucket.host/key instead of https://host/bucket/key
    double max_requests_per_second = 0;      // 0 = no cap
    std::uint64_t max_bytes_per_second = 0;  // 0 = no cap
    // The local metadata cache (object_env.h): "" = $XDG_CACHE_HOME/vmshadow/<repository id>
    // or ~/.cache/vmshadow/<repository id>; "none" = no cache.
    std::string cache_dir;
    // Retries and throttling of the object store are reported here; empty = not reported.
    std::function<void(const std::string&)> log;
};

}  // namespace vmshadow::repo
