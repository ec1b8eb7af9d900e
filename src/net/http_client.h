// SPDX-License-Identifier: MIT
#pragma once
// http_request: one HTTP/1.1 request and its response, over a unix socket (the CLI talking to
// the local daemon), plain HTTP or HTTPS (webhooks, a remote daemon, the replica sender).
//
// This module is: parsing an endpoint ("unix:/run/vmshadow/api.sock", "http://host:port/path",
// "https://host:port/path"), connecting with a deadline, TLS 1.2+ with the peer verified
// against the system's CAs, a given CA file, or a pinned SHA-256 certificate fingerprint
// (the daemon's self-signed certificate, as PBS clients pin theirs), optionally presenting
// a client certificate; a response body bounded in size.
// It is not: retries (the caller's policy: alerts retry with backoff), cookies, redirects.
//
// Thread-safety: free functions; each call uses its own connection.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "net/http.h"

namespace vmshadow::net {

struct HttpEndpoint {
    enum class Scheme { unix_socket, http, https };
    Scheme scheme = Scheme::http;
    std::filesystem::path socket_path;  // unix_socket
    std::string host;                   // http(s)
    std::uint16_t port = 0;
    std::string base_path;  // prefix of every target ("" or "/hooks/x")

    // TLS peer verification (https): a pinned fingerprint ("AB:CD:..." or plain hex, any
    // case) wins; else ca_file; else the system's CAs. insecure skips it (tests only).
    std::optional<std::string> pinned_sha256;
    std::optional<std::filesystem::path> ca_file;
    bool insecure = false;
    std::optional<std::filesystem::path> client_certificate_file;
    std::optional<std::filesystem::path> client_key_file;

    // "unix:/path", "http://h:p/x", "https://[::1]:8470" (no user info, no fragment).
    static Result<HttpEndpoint> parse(std::string_view url);
};

struct HttpClientRequest {
    std::string method = "GET";
    std::string target = "/";  // appended to the endpoint's base_path ("/": the base itself)
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string content_type = "application/json";
    std::chrono::milliseconds timeout{10000};  // connect + send + receive, in all
    std::size_t max_response_bytes = 64 * 1024 * 1024;
};

// The response whatever its status (a 500 is a response, not an error); an error only when
// no response arrived: unavailable (refused, unreachable, no socket), timeout, permission
// (TLS verification failed), invalid_argument (bad endpoint), io (oversized or malformed).
Result<HttpResponse> http_request(const HttpEndpoint& endpoint, const HttpClientRequest& request);

}  // namespace vmshadow::net
