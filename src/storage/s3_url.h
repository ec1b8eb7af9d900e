// SPDX-License-Identifier: MIT
#pragma once
// S3 URLs as curl's SigV4 signing needs them (../shared/LAB.md): curl 7.88 signs the path and
// the query string verbatim, so both must already be in AWS's canonical form: every byte but
// the unreserved ones (A-Z a-z 0-9 - . _ ~) percent-encoded with upper-case hex ('/' kept in
// paths), query parameters sorted by name, a bare sub-resource written "uploads=".
//
// Thread-safety: pure functions.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/s3_blob_store.h"

namespace vmshadow::storage {

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// AWS's UriEncode: unreserved bytes as they are, '/' too when `keep_slash`, others %XX.
std::string uri_encode(std::string_view text, bool keep_slash);

// "a=1&b=x%2Fy&uploads=": sorted by name (then value), names and values encoded.
std::string canonical_query(QueryParams params);

// The URL of `object_key` (the full key in the bucket, prefix included; "" = the bucket
// itself) with `query`: path-style https://host/bucket/key or virtual-hosted
// https://bucket.host/key.
std::string s3_url(const S3Location& location, bool virtual_hosted, std::string_view object_key,
                   const QueryParams& query = {});

}  // namespace vmshadow::storage
