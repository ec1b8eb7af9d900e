// SPDX-License-Identifier: MIT
#pragma once
// The S3 answers vmshadow reads, parsed as hostile input: the body must be within a size
// bound, well-formed XML with the expected root element, every number in range, every key
// under the prefix that was asked for and a valid storage key, pages in strictly increasing
// order. Anything else is ErrorKind::corruption saying what was wrong ("the gateway's answer
// ..."), never a crash or an unbounded allocation. pugixml expands no external entities.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "storage/blob_store.h"

namespace vmshadow::storage {

// Bounds on what a gateway may send back (a page of 1000 keys of 1 KiB is about 1.3 MiB).
inline constexpr std::size_t kMaxListAnswerBytes = 8 << 20;
inline constexpr std::size_t kMaxSmallAnswerBytes = 1 << 20;  // errors, upload ids, completes
inline constexpr int kMaxKeysPerPage = 1000;

struct S3ErrorAnswer {
    std::string code;  // "NoSuchKey", "SlowDown", ... ("" when the body was no S3 error)
    std::string message;
};
// Best effort: a body that is not an <Error> gives empty fields (the status still counts).
S3ErrorAnswer parse_error_answer(std::string_view body);

struct ListPage {
    std::vector<BlobInfo> objects;     // keys relative to the store's prefix
    std::vector<std::string> skipped;  // keys under the prefix that are no valid storage key
    std::string last_key;              // the page's last full key, skipped or not ("" when none)
    bool truncated = false;
    std::string next_token;
};
// A ListObjectsV2 page. `store_prefix` ("" or "p/") is cut from every key, which must start
// with `store_prefix + list_prefix`; `after` is the last key of the previous page ("" for the
// first page; a full key): every key must sort after it and after the one before.
Result<ListPage> parse_list_page(std::string_view body, std::string_view store_prefix,
                                 std::string_view list_prefix, std::string_view after);

// <InitiateMultipartUploadResult><UploadId>.
Result<std::string> parse_upload_id(std::string_view body);
// CompleteMultipartUpload answers 200 and may still carry an <Error> in the body.
Status check_complete_answer(std::string_view body);

// "2026-12-07T11:50:00.000Z" (S3's ISO 8601) to Unix seconds; nullopt when malformed.
std::optional<std::int64_t> parse_iso8601_utc(std::string_view text);

}  // namespace vmshadow::storage
