// SPDX-License-Identifier: MIT
#pragma once
// One HTTP exchange with an S3 gateway over a libcurl easy handle, signed by curl's own SigV4
// (CURLOPT_AWS_SIGV4). Internal to the S3 blob store (s3_blob_store.cpp owns retries, caps and
// the handle pool; this file owns what goes on the wire and what is kept of the answer).
//
// What it guarantees: the request carries x-amz-content-sha256 (the body's hash); a request body is
// streamed from memory or from a file range (no copy of the file in memory); an answer's body goes
// into a caller's fixed buffer (exactly, a longer body aborts the transfer), a growing vector, or a
// bounded string, and error bodies always go to the bounded string; headers are bounded too.
//
// curl 7.88 signs every header it is given, even an empty "Expect:" it then does not send (so
// RGW answers 403): curl's own "Expect: 100-continue" on large bodies stays (unsigned, allowed).
//
// Thread-safety: a transfer uses its handle alone; the pacing callbacks are thread-safe.

#include <curl/curl.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "storage/blob_store.h"

namespace vmshadow::storage {

struct CurlEasyDeleter {
    void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;

// A request body: bytes in memory, or a range of an open file (read with pread, so retries
// and parallel parts read the same descriptor without seeking).
struct RequestBody {
    ByteView memory;
    int fd = -1;
    std::uint64_t offset = 0;
    std::uint64_t size = 0;  // of the file range; memory.size() otherwise
    std::string sha256_hex;
};

struct S3Request {
    std::string method;  // GET HEAD PUT POST DELETE
    std::string url;
    std::vector<std::string> headers;  // "Name: value", besides the ones always sent
    const RequestBody* body = nullptr;
    std::span<std::uint8_t> into;            // a 2xx GET body goes exactly here when set
    bool into_vector = false;                // else into Response::data when set
    std::size_t small_body_bound = 1 << 20;  // else into Response::body, bounded
};

struct S3Response {
    CURLcode curl = CURLE_OK;
    std::string curl_error;
    long status = 0;
    std::map<std::string, std::string> headers;  // lower-case names, last value wins
    std::string body;                            // small answers and every error body
    std::vector<std::uint8_t> data;              // when into_vector
    std::size_t into_filled = 0;                 // bytes written into `into`
    bool overflow = false;                       // the body was longer than its bound
    bool resent = false;  // curl sent the body again on a fresh connection by itself
};

struct TransferSetup {
    std::string sigv4;  // "aws:amz:REGION:s3"
    std::string access_key_id;
    std::string secret_access_key;
    std::string session_token;
    std::string ca_file;
    long connect_timeout_seconds = 10;
    long low_speed_seconds = 300;
    // Called with each chunk's size before it is sent or kept (the bandwidth cap); may sleep.
    std::function<void(std::size_t)> pace_bytes;
};

// Runs one attempt on `handle` (reset first, so its live connection is reused).
S3Response perform_transfer(CURL* handle, const TransferSetup& setup, const S3Request& request);

}  // namespace vmshadow::storage
