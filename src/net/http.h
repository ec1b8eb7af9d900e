// SPDX-License-Identifier: MIT
#pragma once
// HTTP messages as the daemon's API (and later the replica protocol) see them: one request
// in, one response out, bodies in memory and bounded by the server (HttpServerOptions).
//
// This module is: plain values — the request (method, path, decoded query, lower-cased
// headers, body, who sent it) and the response (status, content type, body, headers).
// It is not: routing, authentication or JSON (the daemon's api layer), or I/O
// (http_server.h, http_client.h).
//
// Thread-safety: plain values.

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"

namespace vmshadow::net {

// Who is on the other end of a request.
struct Peer {
    bool unix_socket = false;  // came over the local socket (root only: mode 0600)
    std::optional<uid_t> uid;  // SO_PEERCRED of a unix-socket peer
    std::string address;       // "127.0.0.1:53312" or the socket path
    std::optional<std::string> client_certificate_sha256;   // a verified TLS client cert
    std::optional<std::string> client_certificate_subject;  // its subject, "CN=hosta" (RFC 2253)
};

struct HttpRequest {
    std::string method;  // "GET", "POST", ... as sent (upper case)
    std::string target;  // as sent: "/api/v1/tasks?limit=5"
    std::string path;    // percent-decoded, without the query: "/api/v1/tasks"
    std::map<std::string, std::string> query;    // percent-decoded; a repeated key keeps the last
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;
    Peer peer;

    // The header's value, or "" (name in any case).
    std::string header(std::string_view name) const;
};

struct HttpResponse {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// The one map between errors and HTTP statuses, both ways, for every server (the API, the
// replica protocol) and every client (the CLI, the replica sender): a failure keeps its
// ErrorKind — and so its exit code — across the wire. locked and cancelled answer 409 and
// come back as conflict; a status without a kind of its own comes back as internal.
int http_status_for(ErrorKind kind);
ErrorKind error_kind_for_status(int status);

// "Not Found" for 404, ... ("" for a status it does not know).
std::string_view status_reason(int status);

// Percent-decoding of a path or query component ('+' is a space in a query); nullopt when
// malformed (a bad escape, or a decoded NUL).
std::optional<std::string> percent_decode(std::string_view text, bool query_component);

// Splits "a=1&b=x%20y" into decoded pairs; nullopt when malformed.
std::optional<std::map<std::string, std::string>> parse_query(std::string_view query);

}  // namespace vmshadow::net
