// SPDX-License-Identifier: MIT
#pragma once
// S3BlobStore: a BlobStore on S3-compatible object storage (AWS S3, MinIO, Ceph RADOS
// Gateway), over libcurl with its built-in AWS SigV4 signing (CURLOPT_AWS_SIGV4).
//
// Location: "s3:https://HOST[:PORT]/BUCKET[/PREFIX]" (http:// only for loopback tests).
// Path-style addressing (https://host/bucket/key) unless `virtual_hosted` is set
// (https://bucket.host/key, what AWS prefers).
// Requests:
// - every request carries x-amz-content-sha256 (the body's SHA-256, so the gateway checks
//   the body) and a canonical query string (sorted, percent-encoded), which curl's signing
//   needs (../shared/LAB.md);
// - put: one PUT up to `part_size`, a multipart upload above it (parts sent `connections` at
//   a time, aborted on failure so no part lingers); the object's SHA-256 is stored as
//   x-amz-meta-sha256 and checked by get (a whole-object read); if_absent = If-None-Match: *;
// - read_at: a ranged GET whose length is checked (206 with the exact Content-Range);
// - list: ListObjectsV2 following continuation tokens; every answer is bounded in size and
//   parsed as hostile (pugixml), keys checked with check_key;
// - retries: 5xx, 429 / SlowDown, time-outs and connection resets are retried with
//   exponential backoff and jitter, at most `max_attempts` times and `max_retry_seconds` in
//   all; each retry is reported through `log` ("s3: GET data/ab/…: 503 SlowDown, retry 2 of 8
//   in 0.4 s"); 4xx other than 429 are not retried and name the S3 error code;
// - connections are reused (a pool of curl easy handles, one per transfer in flight);
// - optional caps: requests per second and bytes per second across the store (token
//   buckets), for gateways shared with production.
// Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION (and
// AWS_SESSION_TOKEN) from the environment, else a TOML file (access_key_id,
// secret_access_key, region) that only its owner may read.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "storage/blob_store.h"

namespace vmshadow::storage {

struct S3Location {
    std::string endpoint;  // "https://host:port" (scheme, host, optional port)
    std::string bucket;
    std::string prefix;  // "" or "a/b" (no leading or trailing '/')
    // "s3:https://host:port/bucket/prefix" again (messages, the repository's location).
    std::string text() const;
};
// Parses "s3:https://HOST[:PORT]/BUCKET[/PREFIX]"; a clear invalid_argument otherwise.
Result<S3Location> parse_s3_location(std::string_view spec);
bool is_s3_location(std::string_view spec);  // starts with "s3:"

struct S3Credentials {
    std::string access_key_id;
    std::string secret_access_key;
    std::string region = "us-east-1";
    std::string session_token;
};
// From the environment; not_found when AWS_ACCESS_KEY_ID is unset and `file` is empty,
// else the file (permission error when others may read it).
Result<S3Credentials> load_s3_credentials(const std::string& file);

struct S3Options {
    std::string ca_file;  // a custom CA (PEM) for the endpoint's certificate; "" = system's
    bool virtual_hosted = false;
    unsigned connections = 8;  // transfers in flight at most (1..64)
    // Multipart above this (5 MiB..1 GiB). Twice the repository's 16 MiB pack size: a pack
    // ends past 16 MiB by up to a frame and its trailer, and at 16 MiB every pack went as a
    // multipart upload of a full part and a sliver (4 requests and a second hash, not 1).
    std::uint64_t part_size = 32ULL << 20;
    int max_attempts = 8;                // per request, the first included (1..100)
    double max_retry_seconds = 300;      // total backoff per request
    double requests_per_second = 0;      // 0 = no cap
    std::uint64_t bytes_per_second = 0;  // 0 = no cap (uploads and downloads together)
    int connect_timeout_seconds = 10;
    int transfer_timeout_seconds = 300;           // low-speed abort: below 1 KiB/s for this long
    bool create_bucket = false;                   // make the bucket when missing (repo init)
    std::function<void(const std::string&)> log;  // retries and throttling; may be empty
};

Result<std::unique_ptr<BlobStore>> open_s3_blob_store(const S3Location& location,
                                                      const S3Credentials& credentials,
                                                      const S3Options& options);

}  // namespace vmshadow::storage
