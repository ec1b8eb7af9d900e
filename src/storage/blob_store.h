// SPDX-License-Identifier: MIT
#pragma once
// BlobStore: the storage backend seam under the repository (restic's backend, kopia's blob
// storage). Named objects of bytes, nothing else: no directories, no rename, no append.
//
// This module is: the contract every backend gives, and how to open one. The backends are
// the local directory (local_blob_store.h) and S3-compatible object storage (s3_blob_store.h:
// AWS, MinIO, Ceph RADOS Gateway). One conformance suite (tests/unit/storage) runs against
// every backend. It is not: the repository's format (repo/) nor its caching (repo/object_env.h).
//
// Keys: '/'-separated, no leading or trailing '/', no empty, "." or ".." segment, at most
// 1024 bytes, printable ASCII only (the repository's names are hex and fixed words).
// Anything else is ErrorKind::invalid_argument naming the key.
//
// Guarantees every backend gives (and the conformance suite checks):
// - put/put_file are atomic and durable on success: a reader sees no object, or the whole
//   new content, never part of it. A failed put leaves no object or the old one.
// - With PutOptions::if_absent, a put onto an existing key fails with ErrorKind::conflict and
//   leaves it unchanged (S3: If-None-Match: *, the local store: link(2)).
// - get of a missing key is ErrorKind::not_found; a range past the end, or content that does
//   not match what was stored (length, checksum), is ErrorKind::corruption naming the key.
// - list(prefix) returns every key starting with `prefix` (a plain string prefix, "index/"
//   lists that "folder"), sorted, each with its size and modification time, complete (the S3
//   backend follows continuation tokens). After a successful put, a list sees the key; after a
//   successful remove, it does not (S3 has been strongly consistent since 2020, RGW always).
// - remove of a missing key succeeds.
// - Every error message names the backend and key ("s3:https://h/b/p: data/ab/…: …").
//
// Thread-safety: every method may be called from many threads at once; the S3 backend keeps
// several connections and transfers in flight (S3Options::connections).

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow::storage {

using ByteView = std::span<const std::uint8_t>;

struct BlobInfo {
    std::string key;
    std::uint64_t size = 0;
    std::int64_t modified = 0;  // Unix seconds, the store's clock (gc's grace period)
};

struct PutOptions {
    bool if_absent = false;  // fail with conflict when the key exists
};

class BlobStore {
  public:
    virtual ~BlobStore() = default;

    // How messages name this store: "/srv/repo" or "s3:https://host:port/bucket/prefix".
    virtual const std::string& location() const = 0;

    virtual Status put(std::string_view key, ByteView data, const PutOptions& options = {}) = 0;
    // Stores a local file's content (the S3 backend uploads large files in multipart parts,
    // several at once). The file must not change while it is stored.
    virtual Status put_file(std::string_view key, const std::string& local_path,
                            const PutOptions& options = {}) = 0;

    // Fills `out` with the bytes at [offset, offset + out.size()): exactly, or an error
    // (a short object is corruption). Only that range travels (S3: a ranged GET).
    virtual Status read_at(std::string_view key, std::uint64_t offset,
                           std::span<std::uint8_t> out) = 0;
    // The whole object, its length and (S3) its checksum verified against what was stored.
    virtual Result<std::vector<std::uint8_t>> get(std::string_view key) = 0;

    virtual Result<BlobInfo> stat(std::string_view key) = 0;  // not_found when missing
    virtual Result<std::vector<BlobInfo>> list(std::string_view prefix) = 0;
    virtual Status remove(std::string_view key) = 0;
};

// Checks a key against the rules above (invalid_argument naming it).
Status check_key(std::string_view key);

// read_at of an empty range, for every backend alike: the object must exist (not_found) and
// the offset must not pass its end (corruption).
Status check_empty_read(BlobStore& store, std::string_view key, std::uint64_t offset);

}  // namespace vmshadow::storage
