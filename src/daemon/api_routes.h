// SPDX-License-Identifier: MIT
#pragma once
// ApiRoutes: the REST API (/api/v1) over an ApiBackend — routing, authentication, roles,
// request checks, and the mapping of results to HTTP responses.
//
// Authentication: over the unix socket (mode 0600: root only) a request is admin without a
// token; over HTTPS it needs `Authorization: Bearer NAME:SECRET` (token_store.h) — 401
// without a valid one; 403 when the token's role lacks the route's. Both are logged (to the
// AuthLog given) with the peer and route, never the secret. GET /api/v1/health needs no
// token (load balancers and `vmshadow status` probe it).
// Errors: {"error": "<one line>", "kind": "<kind_name>"} with invalid_argument → 400 (also
// malformed JSON, a body that is not an object, an unknown field, a bad number), not_found →
// 404, conflict / locked → 409, permission → 403, unsupported → 501, unavailable → 503,
// timeout → 504, cancelled → 409, anything else 500. Oversized bodies are refused by the
// HTTP server (413) before they reach here. Unknown paths 404, a known path with the wrong
// method 405 (with Allow).
// Browser sessions (the dashboard): POST /api/v1/session with {"token": "NAME:SECRET"} signs
// in (a wrong token is 401 and logged as above) and sets the cookie `vmshadow_session`
// (HttpOnly, Secure, SameSite=Strict); GET shows it, DELETE signs out. A request with that
// cookie and no Bearer token has the role of the session's token; a POST, PUT or DELETE
// so authenticated must also carry `X-CSRF-Token` equal to the session's csrf value, else
// 403 (kind permission). Bearer requests need no CSRF value (a browser never adds one).
// Paths outside /api/ are the dashboard's static files (static_files.h), when given.
// GET /api/v1/openapi.json is the API's description (openapi.json beside this file,
// compiled in); a test checks that every route here is in it and vice versa.
//
// Thread-safety: handle() may be called from many threads at once.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/api_backend.h"
#include "daemon/session_store.h"
#include "daemon/static_files.h"
#include "daemon/token_store.h"
#include "net/http.h"

namespace vmshadow::daemon {

// Where refused requests are reported: ("401", "127.0.0.1:5012 GET /api/v1/jobs: no token").
using AuthLog = std::function<void(std::string_view what, std::string_view detail)>;

class ApiRoutes {
  public:
    // `sessions`: the browser sessions (nullptr: a store of its own); `web`: the dashboard's
    // files (nullptr: paths outside /api/ are 404).
    ApiRoutes(ApiBackend& backend, const TokenStore& tokens, AuthLog auth_log,
              SessionStore* sessions = nullptr, const StaticFiles* web = nullptr);
    net::HttpResponse handle(const net::HttpRequest& request) const;

    // Every route as "METHOD /api/v1/path/{param}" (for the openapi test).
    static std::vector<std::string> route_list();
    // The OpenAPI document served at /api/v1/openapi.json.
    static std::string_view openapi_json();

  private:
    ApiBackend& backend_;
    const TokenStore& tokens_;
    AuthLog auth_log_;
    std::unique_ptr<SessionStore> own_sessions_;
    SessionStore* sessions_;
    const StaticFiles* web_;
};

// {"error": message, "kind": kind} with the status for the kind.
net::HttpResponse error_response(const Error& error);

// The session cookie's name.
inline constexpr std::string_view kSessionCookie = "vmshadow_session";

}  // namespace vmshadow::daemon
