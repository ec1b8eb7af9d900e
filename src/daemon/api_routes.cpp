// SPDX-License-Identifier: MIT
#include "daemon/api_routes.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <concepts>
#include <cstdint>
#include <set>
#include <span>

#include "common/time_format.h"
#include "daemon/openapi_json.h"
#include "repo/gc.h"

namespace vmshadow::daemon {
namespace {

using nlohmann::json;

constexpr std::string_view kPrefix = "/api/v1";
constexpr std::int64_t kMaxId = std::int64_t{1} << 62;
constexpr std::int64_t kMaxTaskPage = 1000;
constexpr std::int64_t kMaxLogPage = 10000;
constexpr std::int64_t kDefaultLogPage = 1000;
// Deeper request bodies are refused before anything walks them recursively.
constexpr int kMaxBodyDepth = 32;
constexpr std::size_t kMaxNameBytes = 256;
constexpr std::int64_t kMaxKeep = repo::kMaxKeep;  // vmshadow prune's bound
constexpr std::int64_t kMaxPreviewCount = 20;
constexpr std::int64_t kDefaultPreviewCount = 5;

// ---- responses -------------------------------------------------------------------------

// GCC 12 has no <format>: "{}" placeholders filled in order; "{{" and "}}" are braces.
std::string piece(std::string_view text) {
    return std::string(text);
}
template <std::integral T>
std::string piece(T value) {
    return std::to_string(value);
}
template <typename... Args>
std::string fmt(std::string_view pattern, const Args&... args) {
    std::array<std::string, sizeof...(Args)> values{piece(args)...};
    std::string out;
    std::size_t next = 0;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        if (pattern.substr(i, 2) == "{}" && next < values.size()) {
            out += values[next++];
            ++i;
        } else if (pattern.substr(i, 2) == "{{" || pattern.substr(i, 2) == "}}") {
            out += pattern[i++];
        } else {
            out += pattern[i];
        }
    }
    return out;
}

// Backend strings (VM names, log lines) may hold bytes that are not UTF-8: replaced, so
// serializing never throws.
net::HttpResponse json_response(int status, const json& body) {
    net::HttpResponse response;
    response.status = status;
    response.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    return response;
}

net::HttpResponse error_body(int status, std::string_view message, std::string_view kind) {
    return json_response(status, json{{"error", message}, {"kind", kind}});
}

std::unexpected<Error> bad(std::string message) {
    return fail(ErrorKind::invalid_argument, std::move(message));
}

// A client's text, quoted in an error or a log line: printable ASCII only, bounded.
std::string printable(std::string_view text, std::size_t max = 80) {
    std::string out;
    for (char c : text.substr(0, max)) {
        auto u = static_cast<unsigned char>(c);
        out += (u >= 0x20 && u < 0x7F) ? c : '?';
    }
    if (text.size() > max) out += "...";
    return out;
}

// ---- parsing of path, query and body ---------------------------------------------------

// Only digits: no sign, no spaces, no "0x"; overflow is out of range, not wrapped.
Result<std::int64_t> parse_number(std::string_view text, std::string_view param, std::int64_t min,
                                  std::int64_t max) {
    std::int64_t value = 0;
    bool digits = !text.empty() && std::all_of(text.begin(), text.end(),
                                               [](char c) { return c >= '0' && c <= '9'; });
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (!digits || ec != std::errc() || end != text.data() + text.size() || value < min ||
        value > max)
        return bad(fmt("parameter '{}': expected a whole number from {} to {}, got '{}'", param,
                       min, max, printable(text)));
    return value;
}

Result<std::int64_t> parse_id(std::string_view text, std::string_view param) {
    return parse_number(text, param, 1, kMaxId);
}

// Job and token names: [a-z0-9][a-z0-9_-]{0,62} (job_config.h, token_store.h).
bool valid_id_name(std::string_view name) {
    if (name.empty() || name.size() > 63) return false;
    auto lower_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!lower_digit(name[0])) return false;
    return std::all_of(name.begin(), name.end(),
                       [&](char c) { return lower_digit(c) || c == '_' || c == '-'; });
}

Status check_id_name(std::string_view name, std::string_view param) {
    if (valid_id_name(name)) return {};
    return bad(fmt("parameter '{}': '{}' is not a valid name ([a-z0-9][a-z0-9_-]{{0,62}})", param,
                   printable(name)));
}

// VM and repository names are the host's and the config's: any text but empty, too long or
// holding control characters.
Status check_free_name(std::string_view name, std::string_view param) {
    bool control = std::any_of(name.begin(), name.end(),
                               [](char c) { return static_cast<unsigned char>(c) < 0x20; });
    if (!name.empty() && name.size() <= kMaxNameBytes && !control) return {};
    return bad(
        fmt("parameter '{}': '{}' is not a valid name (1 to {} bytes, no control "
            "characters)",
            param, printable(name), kMaxNameBytes));
}

Status check_query(const net::HttpRequest& request, std::span<const std::string_view> known) {
    for (const auto& [key, value] : request.query)
        if (std::find(known.begin(), known.end(), key) == known.end())
            return bad(fmt("unknown query parameter '{}'", printable(key)));
    return {};
}

const std::string* query_value(const net::HttpRequest& request, const std::string& key) {
    auto it = request.query.find(key);
    return it == request.query.end() ? nullptr : &it->second;
}

struct TooDeep {};

// The body as a JSON object; an empty body is {} where `empty_ok`.
Result<json> parse_body(const net::HttpRequest& request, bool empty_ok) {
    if (request.body.empty()) {
        if (empty_ok) return json::object();
        return bad("request body: expected a JSON object, got nothing");
    }
    json body;
    try {
        body = json::parse(request.body, [](int depth, json::parse_event_t, json&) {
            if (depth > kMaxBodyDepth) throw TooDeep{};
            return true;
        });
    } catch (const TooDeep&) {
        return bad(fmt("request body: nested deeper than {} levels", kMaxBodyDepth));
    } catch (const json::parse_error& e) {
        return bad(fmt("request body: malformed JSON at byte {}", e.byte));
    }
    if (!body.is_object())
        return bad(fmt("request body: expected a JSON object, got {}", body.type_name()));
    return body;
}

enum class FieldType { string, boolean, object, count, integer, strings };

struct Field {
    std::string_view name;
    FieldType type;
    bool required = false;
};

std::string_view type_word(FieldType t) {
    switch (t) {
        case FieldType::string:
            return "a non-empty string";
        case FieldType::boolean:
            return "true or false";
        case FieldType::object:
            return "an object";
        case FieldType::count:
            return "a whole number from 1 to 1000000";
        case FieldType::integer:
            return "a whole number";
        case FieldType::strings:
            return "a list of non-empty strings";
    }
    return "";
}

bool has_type(const json& value, FieldType t) {
    switch (t) {
        case FieldType::string:
            return value.is_string() && !value.get_ref<const std::string&>().empty();
        case FieldType::boolean:
            return value.is_boolean();
        case FieldType::object:
            return value.is_object();
        case FieldType::count:
            return value.is_number_integer() && value.get<std::int64_t>() >= 1 &&
                   value.get<std::int64_t>() <= kMaxKeep;
        case FieldType::integer:
            // Above 2^63 it would wrap when read: no field takes such a number anyway.
            return value.is_number_integer() &&
                   (!value.is_number_unsigned() ||
                    value.get<std::uint64_t>() <= std::uint64_t{INT64_MAX});
        case FieldType::strings:
            return value.is_array() && std::all_of(value.begin(), value.end(), [](const json& v) {
                       return v.is_string() && !v.get_ref<const std::string&>().empty();
                   });
    }
    return false;
}

// Every field known, of its type; every required one present.
Status check_fields(const json& body, std::span<const Field> fields) {
    for (const auto& [key, value] : body.items()) {
        auto f = std::find_if(fields.begin(), fields.end(),
                              [&](const Field& x) { return x.name == key; });
        if (f == fields.end()) return bad(fmt("request body: unknown field '{}'", printable(key)));
        if (!has_type(value, f->type))
            return bad(fmt("request body: field '{}' must be {}, got {}", f->name,
                           type_word(f->type), value.type_name()));
    }
    for (const auto& f : fields)
        if (f.required && !body.contains(f.name))
            return bad(fmt("request body: field '{}' is required", f.name));
    return {};
}

Result<json> parse_body_fields(const net::HttpRequest& request, std::span<const Field> fields,
                               bool empty_ok) {
    auto body = parse_body(request, empty_ok);
    if (!body) return body;
    // An optional field given as null is absent (what clients serializing an empty optional
    // send); the backend never sees the null.
    for (const auto& f : fields) {
        auto it = body->find(f.name);
        if (!f.required && it != body->end() && it->is_null()) body->erase(it);
    }
    if (auto ok = check_fields(*body, fields); !ok) return fail(ok.error());
    return body;
}

// ---- the routes ------------------------------------------------------------------------

struct Call {
    ApiBackend& backend;
    const net::HttpRequest& request;
    std::vector<std::string_view> params;  // the path's {…} segments, in order
    SessionStore& sessions;
    const TokenStore& tokens;
    const AuthLog& log;
};

using Handler = Result<net::HttpResponse> (*)(const Call&);

struct Route {
    std::string_view method;
    std::string_view path;     // below kPrefix, with {param} segments
    std::optional<Role> role;  // nullopt: no token needed
    Handler handler;
    std::vector<std::string_view> query = {};  // the query parameters it takes; others are 400
};

Result<net::HttpResponse> reply(Result<json> result, int status = 200) {
    if (!result) return fail(result.error());
    return json_response(status, *result);
}

Result<net::HttpResponse> get_health(const Call& c) {
    return json_response(200, c.backend.health());
}

Result<net::HttpResponse> get_openapi(const Call&) {
    net::HttpResponse response;
    response.body = std::string(kOpenApiJson);
    return response;
}

Result<net::HttpResponse> get_metrics(const Call& c) {
    net::HttpResponse response;
    response.content_type = "text/plain; version=0.0.4";
    response.body = c.backend.metrics();
    return response;
}

Result<net::HttpResponse> get_vms(const Call& c) {
    return reply(c.backend.vms());
}

Result<net::HttpResponse> get_points(const Call& c) {
    const std::string* vm = query_value(c.request, "vm");
    if (!vm) return bad("parameter 'vm' is required (GET /api/v1/points?vm=NAME)");
    if (auto ok = check_free_name(*vm, "vm"); !ok) return fail(ok.error());
    return reply(c.backend.points(*vm));
}

Result<net::HttpResponse> get_jobs(const Call& c) {
    return reply(c.backend.jobs());
}

constexpr std::array kJobEditFields{Field{"digest", FieldType::string, true},
                                    Field{"job", FieldType::object, true}};

Result<net::HttpResponse> post_job(const Call& c) {
    auto body = parse_body_fields(c.request, kJobEditFields, false);
    if (!body) return fail(body.error());
    return reply(c.backend.add_job((*body)["job"], (*body)["digest"].get<std::string>()));
}

Result<net::HttpResponse> put_job(const Call& c) {
    std::string id(c.params[0]);
    if (auto ok = check_id_name(id, "id"); !ok) return fail(ok.error());
    auto body = parse_body_fields(c.request, kJobEditFields, false);
    if (!body) return fail(body.error());
    const json& job = (*body)["job"];
    // The path names the job; a body naming another would be a rename nobody asked for.
    if (auto it = job.find("id"); it != job.end() && *it != json(id))
        return bad(fmt("request body: job.id must be the path's '{}'", id));
    return reply(c.backend.edit_job(id, job, (*body)["digest"].get<std::string>()));
}

Result<net::HttpResponse> delete_job(const Call& c) {
    std::string id(c.params[0]);
    if (auto ok = check_id_name(id, "id"); !ok) return fail(ok.error());
    constexpr std::array fields{Field{"digest", FieldType::string, false}};
    auto body = parse_body_fields(c.request, fields, true);
    if (!body) return fail(body.error());
    const std::string* in_query = query_value(c.request, "digest");
    bool in_body = body->contains("digest");
    if (in_query && in_body)
        return bad("parameter 'digest': give it in the query or the body, not both");
    if (!in_query && !in_body)
        return bad("parameter 'digest' is required (the digest of GET /api/v1/jobs)");
    std::string digest = in_query ? *in_query : (*body)["digest"].get<std::string>();
    if (digest.empty()) return bad("parameter 'digest' must not be empty");
    return reply(c.backend.remove_job(id, digest));
}

Result<net::HttpResponse> run_job(const Call& c) {
    std::string id(c.params[0]);
    if (auto ok = check_id_name(id, "id"); !ok) return fail(ok.error());
    if (auto body = parse_body_fields(c.request, {}, true); !body) return fail(body.error());
    return reply(c.backend.run_job(id), 202);
}

Result<TaskFilter> task_filter(const net::HttpRequest& request) {
    TaskFilter filter;
    if (auto* v = query_value(request, "state")) {
        filter.state = parse_task_state(*v);
        if (!filter.state)
            return bad(
                fmt("parameter 'state': '{}' is not one of queued, running, ok, "
                    "failed, cancelled, interrupted",
                    printable(*v)));
    }
    if (auto* v = query_value(request, "job")) {
        if (auto ok = check_id_name(*v, "job"); !ok) return fail(ok.error());
        filter.job = *v;
    }
    if (auto* v = query_value(request, "kind")) {
        // The kinds the daemon gives its tasks (daemon_tasks.cpp, daemon_replica.cpp).
        constexpr std::array<std::string_view, 15> kinds{"backup",
                                                         "verify",
                                                         "prune",
                                                         "check",
                                                         "restore",
                                                         "gc",
                                                         "replica-initial",
                                                         "replica-cycle",
                                                         "replica-resync",
                                                         "replica-test-failover",
                                                         "replica-failover",
                                                         "replica-planned-failover",
                                                         "replica-reverse",
                                                         "replica-export-initial",
                                                         "replica-import-initial"};
        if (std::find(kinds.begin(), kinds.end(), *v) == kinds.end()) {
            std::string list;
            for (auto k : kinds) list += (list.empty() ? "" : ", ") + std::string(k);
            return bad(fmt("parameter 'kind': '{}' is not one of {}", printable(*v), list));
        }
        filter.kind = *v;
    }
    if (auto* v = query_value(request, "before")) {
        auto before = parse_id(*v, "before");
        if (!before) return fail(before.error());
        filter.before_id = *before;
    }
    if (auto* v = query_value(request, "limit")) {
        auto limit = parse_number(*v, "limit", 1, kMaxTaskPage);
        if (!limit) return fail(limit.error());
        filter.limit = static_cast<std::size_t>(*limit);
    }
    return filter;
}

Result<net::HttpResponse> get_tasks(const Call& c) {
    auto filter = task_filter(c.request);
    if (!filter) return fail(filter.error());
    return reply(c.backend.tasks(*filter));
}

Result<net::HttpResponse> get_task(const Call& c) {
    auto id = parse_id(c.params[0], "id");
    if (!id) return fail(id.error());
    return reply(c.backend.task(*id));
}

Result<net::HttpResponse> get_task_log(const Call& c) {
    auto id = parse_id(c.params[0], "id");
    if (!id) return fail(id.error());
    std::int64_t start = 1;
    std::int64_t limit = kDefaultLogPage;
    if (auto* v = query_value(c.request, "start")) {
        auto n = parse_number(*v, "start", 0, kMaxId);
        if (!n) return fail(n.error());
        start = *n;
    }
    if (auto* v = query_value(c.request, "limit")) {
        auto n = parse_number(*v, "limit", 1, kMaxLogPage);
        if (!n) return fail(n.error());
        limit = *n;
    }
    return reply(c.backend.task_log(*id, start, static_cast<std::size_t>(limit)));
}

Result<net::HttpResponse> delete_task(const Call& c) {
    auto id = parse_id(c.params[0], "id");
    if (!id) return fail(id.error());
    if (auto body = parse_body_fields(c.request, {}, true); !body) return fail(body.error());
    return reply(c.backend.abort_task(*id));
}

Result<net::HttpResponse> get_repos(const Call& c) {
    return reply(c.backend.repositories());
}

Result<net::HttpResponse> get_repo_status(const Call& c) {
    std::string name(c.params[0]);
    if (auto ok = check_free_name(name, "name"); !ok) return fail(ok.error());
    return reply(c.backend.repository_status(name));
}

// What to restore or verify: a VM ("vm", its latest point unless "point" says) or a point
// ("web1@latest", an id); the backend resolves the rest and says what it lacks.
Status check_point_choice(const json& body) {
    if (body.contains("vm") || body.contains("point")) return {};
    return bad("request body: field 'vm' or 'point' is required");
}

Result<net::HttpResponse> post_restore(const Call& c) {
    constexpr std::array fields{
        Field{"vm", FieldType::string},         Field{"point", FieldType::string},
        Field{"repository", FieldType::string}, Field{"as", FieldType::string},
        Field{"replace", FieldType::boolean},   Field{"start", FieldType::boolean}};
    auto body = parse_body_fields(c.request, fields, false);
    if (!body) return fail(body.error());
    if (auto ok = check_point_choice(*body); !ok) return fail(ok.error());
    return reply(c.backend.restore(*body), 202);
}

Result<net::HttpResponse> post_verify(const Call& c) {
    constexpr std::array fields{Field{"vm", FieldType::string}, Field{"point", FieldType::string},
                                Field{"repository", FieldType::string},
                                Field{"boot", FieldType::boolean}};
    auto body = parse_body_fields(c.request, fields, false);
    if (!body) return fail(body.error());
    if (auto ok = check_point_choice(*body); !ok) return fail(ok.error());
    return reply(c.backend.verify(*body), 202);
}

Result<net::HttpResponse> get_tokens(const Call& c) {
    return reply(c.backend.tokens());
}

Result<net::HttpResponse> post_token(const Call& c) {
    constexpr std::array fields{Field{"name", FieldType::string, true},
                                Field{"role", FieldType::string, true}};
    auto body = parse_body_fields(c.request, fields, false);
    if (!body) return fail(body.error());
    std::string name = (*body)["name"].get<std::string>();
    if (auto ok = check_id_name(name, "name"); !ok) return fail(ok.error());
    std::string role_text = (*body)["role"].get<std::string>();
    auto role = parse_role(role_text);
    if (!role)
        return bad(fmt("parameter 'role': '{}' is not one of audit, operator, admin",
                       printable(role_text)));
    return reply(c.backend.create_token(name, *role));
}

Result<net::HttpResponse> delete_token(const Call& c) {
    std::string name(c.params[0]);
    if (auto ok = check_id_name(name, "name"); !ok) return fail(ok.error());
    if (auto body = parse_body_fields(c.request, {}, true); !body) return fail(body.error());
    return reply(c.backend.revoke_token(name));
}

std::vector<std::string_view> split(std::string_view path) {
    std::vector<std::string_view> parts;
    std::size_t pos = 0;
    while (pos <= path.size()) {
        auto next = path.find('/', pos);
        if (next == std::string_view::npos) next = path.size();
        parts.push_back(path.substr(pos, next - pos));
        pos = next + 1;
    }
    return parts;
}

// The path's {…} values when `path` (below kPrefix, split) fits the route's; nullopt if not.
std::optional<std::vector<std::string_view>> match(const Route& route,
                                                   const std::vector<std::string_view>& path) {
    auto pattern = split(route.path);
    if (pattern.size() != path.size()) return std::nullopt;
    std::vector<std::string_view> params;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i].starts_with('{')) {
            if (path[i].empty()) return std::nullopt;
            params.push_back(path[i]);
        } else if (pattern[i] != path[i]) {
            return std::nullopt;
        }
    }
    return params;
}

// "Bearer NAME:SECRET" → "NAME:SECRET"; the scheme in any case (RFC 7235).
std::optional<std::string_view> bearer_token(std::string_view header) {
    constexpr std::string_view scheme = "bearer ";
    if (header.size() <= scheme.size()) return std::nullopt;
    for (std::size_t i = 0; i < scheme.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(header[i])) != scheme[i]) return std::nullopt;
    auto token = header.substr(scheme.size());
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
    if (token.empty()) return std::nullopt;
    return token;
}

// The name part of a presented token, for logs (never the secret): "" when it has none.
std::string token_name_for_log(std::string_view token) {
    auto colon = token.find(':');
    if (colon == std::string_view::npos) return "";
    auto name = token.substr(0, colon);
    return valid_id_name(name) ? std::string(name) : "";
}

// ---- browser sessions --------------------------------------------------------------------

// The value of the session cookie in the Cookie header ("a=1; vmshadow_session=…"), or "".
std::string session_cookie(const net::HttpRequest& request) {
    const std::string cookies = request.header("cookie");
    std::string_view rest = cookies;
    while (!rest.empty()) {
        auto end = rest.find(';');
        auto pair = rest.substr(0, end);
        rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
        while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
        auto eq = pair.find('=');
        if (eq != std::string_view::npos && pair.substr(0, eq) == kSessionCookie)
            return std::string(pair.substr(eq + 1));
    }
    return "";
}

std::string where_of(const net::HttpRequest& request) {
    return fmt("{} {} {}", printable(request.peer.address), printable(request.method, 10),
               printable(request.path, 200));
}

std::string cookie_header(std::string_view value, std::int64_t max_age) {
    return fmt("{}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}", kSessionCookie,
               value, max_age);
}

json session_json(const Session& s) {
    return json{{"name", s.name},
                {"role", role_name(s.role)},
                {"csrf", s.csrf},
                {"expires", iso8601_utc(s.expires())}};
}

net::HttpResponse unauthorized(std::string_view message) {
    auto response = error_body(401, message, kind_name(ErrorKind::permission));
    response.headers.emplace_back("WWW-Authenticate", "Bearer");
    return response;
}

bool state_changing(std::string_view method) {
    return method == "POST" || method == "PUT" || method == "DELETE";
}

// A cookie-authenticated change must name the session's CSRF value: another site can make the
// browser send the cookie, but cannot read the value to send with it.
std::optional<net::HttpResponse> refuse_without_csrf(const net::HttpRequest& request,
                                                     const Session& session, const AuthLog& log) {
    if (!state_changing(request.method)) return std::nullopt;
    if (equal_secret(request.header("x-csrf-token"), session.csrf)) return std::nullopt;
    if (log)
        log("403", fmt("{}: session of token '{}': missing or wrong X-CSRF-Token",
                       where_of(request), session.name));
    return error_body(403,
                      "this change needs the header X-CSRF-Token with the session's csrf value "
                      "(GET /api/v1/session)",
                      kind_name(ErrorKind::permission));
}

Result<net::HttpResponse> post_session(const Call& c) {
    constexpr std::array fields{Field{"token", FieldType::string, true}};
    auto body = parse_body_fields(c.request, fields, false);
    if (!body) return fail(body.error());
    const std::string token = (*body)["token"].get<std::string>();
    auto info = c.tokens.authenticate(token);
    if (!info) {
        if (c.log)
            c.log("401", fmt("{}: sign-in with invalid token '{}'", where_of(c.request),
                             token_name_for_log(token)));
        return unauthorized("the token is not valid (NAME:SECRET, from vmshadow token create)");
    }
    Session s = c.sessions.create(*info);
    auto response = json_response(200, session_json(s));
    response.headers.emplace_back("Set-Cookie", cookie_header(s.id, kSessionAbsolute.count()));
    response.headers.emplace_back("Cache-Control", "no-store");
    return response;
}

Result<net::HttpResponse> get_session(const Call& c) {
    auto session = c.sessions.find(session_cookie(c.request));
    if (!session) return unauthorized("not signed in (POST /api/v1/session)");
    auto response = json_response(200, session_json(*session));
    response.headers.emplace_back("Cache-Control", "no-store");
    return response;
}

Result<net::HttpResponse> delete_session(const Call& c) {
    if (auto body = parse_body_fields(c.request, {}, true); !body) return fail(body.error());
    auto session = c.sessions.find(session_cookie(c.request));
    bool signed_out = false;
    if (session) {
        if (auto refusal = refuse_without_csrf(c.request, *session, c.log)) return *refusal;
        signed_out = c.sessions.remove(session->id);
    }
    // The cookie is cleared either way: a stale one in the browser is of no use.
    auto response = json_response(200, json{{"signed_out", signed_out}});
    response.headers.emplace_back("Set-Cookie", cookie_header("", 0));
    return response;
}

// ---- the dashboard's previews and actions ---------------------------------------------

// Text from a client (an expression): 1 to 256 bytes without control characters.
Status check_text(std::string_view text, std::string_view param) {
    bool control = std::any_of(text.begin(), text.end(),
                               [](char ch) { return static_cast<unsigned char>(ch) < 0x20; });
    if (!text.empty() && text.size() <= kMaxNameBytes && !control) return {};
    return bad(fmt("parameter '{}': expected 1 to {} bytes without control characters", param,
                   kMaxNameBytes));
}

Result<net::HttpResponse> get_schedule_preview(const Call& c) {
    const std::string* expr = query_value(c.request, "expr");
    if (!expr) return bad("parameter 'expr' is required (a calendar event: daily, Mon..Fri 22:00)");
    if (auto ok = check_text(*expr, "expr"); !ok) return fail(ok.error());
    std::int64_t count = kDefaultPreviewCount;
    if (auto* v = query_value(c.request, "count")) {
        auto n = parse_number(*v, "count", 1, kMaxPreviewCount);
        if (!n) return fail(n.error());
        count = *n;
    }
    return reply(c.backend.schedule_preview(*expr, static_cast<int>(count)));
}

constexpr std::array kKeepFields{"keep_last",   "keep_hourly",  "keep_daily",
                                 "keep_weekly", "keep_monthly", "keep_yearly"};

Result<net::HttpResponse> post_prune_preview(const Call& c) {
    std::string name(c.params[0]);
    if (auto ok = check_free_name(name, "name"); !ok) return fail(ok.error());
    constexpr std::array fields{
        Field{"vm", FieldType::string},         Field{"keep_last", FieldType::count},
        Field{"keep_hourly", FieldType::count}, Field{"keep_daily", FieldType::count},
        Field{"keep_weekly", FieldType::count}, Field{"keep_monthly", FieldType::count},
        Field{"keep_yearly", FieldType::count}};
    auto body = parse_body_fields(c.request, fields, false);
    if (!body) return fail(body.error());
    if (auto it = body->find("vm"); it != body->end())
        if (auto ok = check_free_name(it->get<std::string>(), "vm"); !ok) return fail(ok.error());
    bool any = std::any_of(kKeepFields.begin(), kKeepFields.end(),
                           [&](const char* k) { return body->contains(k); });
    if (!any)
        return bad(
            "request body: at least one keep_* field is required (without one prune would "
            "forget every point)");
    return reply(c.backend.prune_preview(name, *body));
}

Result<net::HttpResponse> delete_point(const Call& c) {
    std::string point(c.params[0]);
    if (auto ok = check_free_name(point, "id"); !ok) return fail(ok.error());
    std::string repository;
    if (auto* v = query_value(c.request, "repository")) {
        if (auto ok = check_free_name(*v, "repository"); !ok) return fail(ok.error());
        repository = *v;
    }
    if (auto body = parse_body_fields(c.request, {}, true); !body) return fail(body.error());
    return reply(c.backend.forget_point(point, repository));
}

Result<net::HttpResponse> post_backup(const Call& c) {
    constexpr std::array fields{Field{"vm", FieldType::string, true},
                                Field{"method", FieldType::string},
                                Field{"repository", FieldType::string}};
    auto body = parse_body_fields(c.request, fields, false);
    if (!body) return fail(body.error());
    const std::string vm = (*body)["vm"].get<std::string>();
    if (auto ok = check_free_name(vm, "vm"); !ok) return fail(ok.error());
    // A name, not a job's pattern: "web*" would back up every VM it matches.
    if (vm.find_first_of("*?[") != std::string::npos)
        return bad(fmt("request body: field 'vm': '{}' is a pattern; name one VM", printable(vm)));
    if (auto it = body->find("method"); it != body->end()) {
        constexpr std::array methods{"auto", "application", "image", "crash"};
        const auto& m = it->get_ref<const std::string&>();
        if (std::find(methods.begin(), methods.end(), m) == methods.end())
            return bad(
                fmt("request body: field 'method': '{}' is not one of auto, application, "
                    "image, crash",
                    printable(m)));
    }
    if (auto it = body->find("repository"); it != body->end())
        if (auto ok = check_free_name(it->get<std::string>(), "repository"); !ok)
            return fail(ok.error());
    return reply(c.backend.backup(*body), 202);
}

// ---- replica (docs/REPLICA.md) ---------------------------------------------------------

constexpr std::size_t kMaxPathBytes = 4096;
constexpr std::size_t kMaxExcludedDisks = 64;
constexpr std::int64_t kMaxHistory = 24;
constexpr std::int64_t kMaxAppConsistentHours = 24;
constexpr std::int64_t kMaxBandwidthMib = 100000;

// The body's whole number `name` in [min, max] (its type was checked by check_fields).
Status check_range(const json& body, std::string_view name, std::int64_t min, std::int64_t max) {
    auto it = body.find(name);
    if (it == body.end()) return {};
    auto v = it->get<std::int64_t>();
    if (v >= min && v <= max) return {};
    return bad(fmt("request body: field '{}' must be a whole number from {} to {}, got {}", name,
                   min, max, v));
}

// "host:port", "[::1]:port": a host (no spaces or control characters) and a port 1..65535.
Status check_endpoint(std::string_view text, std::string_view param) {
    auto colon = text.rfind(':');
    std::string_view host = colon == std::string_view::npos ? text : text.substr(0, colon);
    std::string_view port = colon == std::string_view::npos ? "" : text.substr(colon + 1);
    bool host_ok =
        !host.empty() && host.size() <= 253 && std::all_of(host.begin(), host.end(), [](char ch) {
            auto u = static_cast<unsigned char>(ch);
            return u > 0x20 && u < 0x7F && ch != '/' && ch != '@';
        });
    if (host.starts_with('[') != host.ends_with(']')) host_ok = false;
    if (host_ok && !port.empty() && parse_number(port, param, 1, 65535)) return {};
    return bad(
        fmt("request body: field '{}': '{}' is not HOST:PORT (the replica host's "
            "[replica] endpoint, e.g. hostb.example:8471)",
            param, printable(text)));
}

// A path on the daemon's host: absolute, bounded, without control characters.
Status check_host_path(std::string_view text, std::string_view param) {
    bool control = std::any_of(text.begin(), text.end(),
                               [](char ch) { return static_cast<unsigned char>(ch) < 0x20; });
    if (text.starts_with('/') && text.size() <= kMaxPathBytes && !control) return {};
    return bad(
        fmt("request body: field '{}': expected an absolute path of at most {} bytes "
            "without control characters, got '{}'",
            param, kMaxPathBytes, printable(text)));
}

// ISO 8601 UTC ("2026-12-07T22:00:00Z") or a time of day "HH:MM" (the next one).
bool valid_start_at(std::string_view text) {
    if (parse_iso8601_utc(text)) return true;
    auto digit = [](char ch) { return ch >= '0' && ch <= '9'; };
    if (text.size() != 5 || text[2] != ':' || !digit(text[0]) || !digit(text[1]) ||
        !digit(text[3]) || !digit(text[4]))
        return false;
    return (text[0] - '0') * 10 + (text[1] - '0') < 24 && text[3] < '6';
}

Status check_one_of(const json& body, std::string_view name,
                    std::span<const std::string_view> allowed) {
    auto it = body.find(name);
    if (it == body.end()) return {};
    const auto& v = it->get_ref<const std::string&>();
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return {};
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return bad(fmt("request body: field '{}': '{}' is not one of {}", name, printable(v), list));
}

Result<net::HttpResponse> get_replicas(const Call& c) {
    return reply(c.backend.replicas());
}

constexpr std::array kReplicaEnableFields{Field{"vm", FieldType::string, true},
                                          Field{"to", FieldType::string, true},
                                          Field{"interval_s", FieldType::integer, true},
                                          Field{"history", FieldType::integer},
                                          Field{"app_consistent_every_h", FieldType::integer},
                                          Field{"exclude_disks", FieldType::strings},
                                          Field{"bandwidth_mib", FieldType::integer},
                                          Field{"start_at", FieldType::string},
                                          Field{"initial", FieldType::string},
                                          Field{"seed_repository", FieldType::string},
                                          Field{"seed_point", FieldType::string}};

// The seed fields go with initial = repository, and only with it.
Status check_seed(const json& body) {
    bool seeded = body.value("initial", "") == "repository";
    for (const char* name : {"seed_repository", "seed_point"}) {
        if (seeded && !body.contains(name))
            return bad(fmt("request body: field '{}' is required with initial 'repository'", name));
        if (!seeded && body.contains(name))
            return bad(fmt("request body: field '{}' goes only with initial 'repository'", name));
    }
    if (!seeded) return {};
    if (auto ok = check_host_path(body["seed_repository"].get<std::string>(), "seed_repository");
        !ok)
        return ok;
    return check_text(body["seed_point"].get<std::string>(), "seed_point");
}

Status check_replica_enable(const json& body) {
    if (auto ok = check_free_name(body["vm"].get<std::string>(), "vm"); !ok) return ok;
    if (auto ok = check_endpoint(body["to"].get<std::string>(), "to"); !ok) return ok;
    auto interval = body["interval_s"].get<std::int64_t>();
    if (interval != 30 && interval != 300 && interval != 900)
        return bad(
            fmt("request body: field 'interval_s' must be 30, 300 or 900 (seconds, as "
                "Hyper-V Replica offers), got {}",
                interval));
    if (auto ok = check_range(body, "history", 0, kMaxHistory); !ok) return ok;
    if (auto ok = check_range(body, "app_consistent_every_h", 0, kMaxAppConsistentHours); !ok)
        return ok;
    if (auto ok = check_range(body, "bandwidth_mib", 0, kMaxBandwidthMib); !ok) return ok;
    if (auto it = body.find("exclude_disks"); it != body.end()) {
        if (it->size() > kMaxExcludedDisks)
            return bad(
                fmt("request body: field 'exclude_disks': at most {} disks", kMaxExcludedDisks));
        for (const auto& disk : *it)
            if (auto ok = check_free_name(disk.get<std::string>(), "exclude_disks"); !ok) return ok;
    }
    if (auto it = body.find("start_at"); it != body.end())
        if (!valid_start_at(it->get<std::string>()))
            return bad(
                fmt("request body: field 'start_at': '{}' is neither ISO 8601 UTC "
                    "(2026-12-07T22:00:00Z) nor a time of day (HH:MM)",
                    printable(it->get<std::string>())));
    constexpr std::array<std::string_view, 3> initial{"network", "offline", "repository"};
    if (auto ok = check_one_of(body, "initial", initial); !ok) return ok;
    return check_seed(body);
}

Result<net::HttpResponse> post_replica(const Call& c) {
    auto body = parse_body_fields(c.request, kReplicaEnableFields, false);
    if (!body) return fail(body.error());
    if (auto ok = check_replica_enable(*body); !ok) return fail(ok.error());
    return reply(c.backend.replica_enable(*body));
}

Result<net::HttpResponse> get_replica_points(const Call& c) {
    std::string vm(c.params[0]);
    if (auto ok = check_free_name(vm, "vm"); !ok) return fail(ok.error());
    return reply(c.backend.replica_points(vm));
}

// The actions on one VM's replication (api_backend.h) and the body fields each takes.
struct ReplicaAction {
    std::string_view name;
    std::vector<std::string_view> fields;
    bool needs_dir = false;
};

const std::array<ReplicaAction, 13> kReplicaActions{{
    {"pause", {}},
    {"resume", {}},
    {"remove", {"on_replica"}},
    {"cycle", {}},
    {"resync", {}},
    {"test-failover", {"point"}},
    {"stop-test", {}},
    {"failover", {"point"}},
    {"commit", {}},
    {"planned-failover", {}},
    {"reverse", {}},
    {"export-initial", {"dir"}, true},
    {"import-initial", {"dir"}, true},
}};

constexpr std::array kReplicaActionFields{Field{"on_replica", FieldType::boolean},
                                          Field{"point", FieldType::integer},
                                          Field{"dir", FieldType::string}};

Result<const ReplicaAction*> find_replica_action(std::string_view name) {
    std::string list;
    for (const auto& a : kReplicaActions) {
        if (a.name == name) return &a;
        list += (list.empty() ? "" : ", ") + std::string(a.name);
    }
    return fail(ErrorKind::not_found,
                fmt("no replica action '{}' (one of {})", printable(name), list));
}

Result<net::HttpResponse> post_replica_action(const Call& c) {
    std::string vm(c.params[0]);
    if (auto ok = check_free_name(vm, "vm"); !ok) return fail(ok.error());
    // Every field any action takes is checked for its type first; then whether this one
    // takes it.
    auto body = parse_body_fields(c.request, kReplicaActionFields, true);
    if (!body) return fail(body.error());
    auto action = find_replica_action(c.params[1]);
    if (!action) return fail(action.error());
    const ReplicaAction& a = **action;
    for (const auto& [key, value] : body->items())
        if (std::find(a.fields.begin(), a.fields.end(), key) == a.fields.end())
            return bad(fmt("request body: field '{}' does not go with action '{}'", key, a.name));
    if (auto ok = check_range(*body, "point", 0, kMaxId); !ok) return fail(ok.error());
    if (a.needs_dir && !body->contains("dir"))
        return bad(fmt("request body: field 'dir' is required with action '{}'", a.name));
    if (auto it = body->find("dir"); it != body->end())
        if (auto ok = check_host_path(it->get<std::string>(), "dir"); !ok) return fail(ok.error());
    auto answer = c.backend.replica_action(vm, std::string(a.name), *body);
    if (!answer) return fail(answer.error());
    // A long action started a task: 202, as every route that starts one answers.
    return json_response(answer->is_object() && answer->contains("task") ? 202 : 200, *answer);
}

// The route → role table (token_store.h): audit reads, operator runs, admin edits.
constexpr Role kAudit = Role::audit;
constexpr Role kOperator = Role::operator_;
constexpr Role kAdmin = Role::admin;
const std::array<Route, 32> kRoutes{{
    {"GET", "/health", std::nullopt, get_health},
    {"GET", "/openapi.json", std::nullopt, get_openapi},
    {"GET", "/session", std::nullopt, get_session},
    {"POST", "/session", std::nullopt, post_session},
    {"DELETE", "/session", std::nullopt, delete_session},
    {"GET", "/metrics", kAudit, get_metrics},
    {"GET", "/vms", kAudit, get_vms},
    {"GET", "/points", kAudit, get_points, {"vm"}},
    {"DELETE", "/points/{id}", kOperator, delete_point, {"repository"}},
    {"GET", "/jobs", kAudit, get_jobs},
    {"POST", "/jobs", kAdmin, post_job},
    {"PUT", "/jobs/{id}", kAdmin, put_job},
    {"DELETE", "/jobs/{id}", kAdmin, delete_job, {"digest"}},
    {"POST", "/jobs/{id}/run", kOperator, run_job},
    {"GET", "/tasks", kAudit, get_tasks, {"state", "job", "kind", "before", "limit"}},
    {"GET", "/tasks/{id}", kAudit, get_task},
    {"GET", "/tasks/{id}/log", kAudit, get_task_log, {"start", "limit"}},
    {"DELETE", "/tasks/{id}", kOperator, delete_task},
    {"GET", "/repos", kAudit, get_repos},
    {"GET", "/repos/{name}/status", kAudit, get_repo_status},
    {"POST", "/repos/{name}/prune-preview", kAudit, post_prune_preview},
    {"GET", "/schedule/preview", kAudit, get_schedule_preview, {"expr", "count"}},
    {"POST", "/backup", kOperator, post_backup},
    {"POST", "/restore", kOperator, post_restore},
    {"POST", "/verify", kOperator, post_verify},
    {"GET", "/tokens", kAdmin, get_tokens},
    {"POST", "/tokens", kAdmin, post_token},
    {"DELETE", "/tokens/{name}", kAdmin, delete_token},
    {"GET", "/replicas", kAudit, get_replicas},
    {"POST", "/replicas", kOperator, post_replica},
    {"GET", "/replicas/{vm}/points", kAudit, get_replica_points},
    {"POST", "/replicas/{vm}/{action}", kOperator, post_replica_action},
}};

}  // namespace

net::HttpResponse error_response(const Error& error) {
    return error_body(net::http_status_for(error.kind()), error.message(), kind_name(error.kind()));
}

ApiRoutes::ApiRoutes(ApiBackend& backend, const TokenStore& tokens, AuthLog auth_log,
                     SessionStore* sessions, const StaticFiles* web)
    : backend_(backend),
      tokens_(tokens),
      auth_log_(std::move(auth_log)),
      own_sessions_(sessions ? nullptr : std::make_unique<SessionStore>(system_clock())),
      sessions_(sessions ? sessions : own_sessions_.get()),
      web_(web) {}

std::vector<std::string> ApiRoutes::route_list() {
    std::vector<std::string> out;
    for (const auto& r : kRoutes) out.push_back(fmt("{} {}{}", r.method, kPrefix, r.path));
    return out;
}

std::string_view ApiRoutes::openapi_json() {
    return kOpenApiJson;
}

namespace {

// The refusal to send when the request may not use a route needing `need`, or nullopt.
// A request with the session cookie and no Authorization header is the session's token, and
// a change so authenticated must carry the session's CSRF value.
std::optional<net::HttpResponse> refuse(const net::HttpRequest& request, Role need,
                                        const TokenStore& tokens, SessionStore& sessions,
                                        const AuthLog& log) {
    // The socket is mode 0600, so its peers are root or the daemon's own user: admin. Should
    // its mode ever be loosened, anyone else needs a token, as over HTTPS.
    const auto& peer = request.peer;
    if (peer.unix_socket && (!peer.uid || *peer.uid == 0 || *peer.uid == ::geteuid()))
        return std::nullopt;
    auto where = where_of(request);
    const std::string authorization = request.header("authorization");  // token views into it
    auto token = bearer_token(authorization);
    std::optional<TokenInfo> info;
    const std::string cookie = authorization.empty() ? session_cookie(request) : "";
    if (token) {
        info = tokens.authenticate(*token);
    } else if (!cookie.empty()) {
        if (auto session = sessions.find(cookie)) {
            if (auto refusal = refuse_without_csrf(request, *session, log)) return refusal;
            info = TokenInfo{session->name, session->role, session->created};
        }
    }
    if (!info) {
        std::string why = token             ? fmt("invalid token '{}'", token_name_for_log(*token))
                          : !cookie.empty() ? std::string("unknown or expired session")
                                            : std::string("no bearer token");
        if (log) log("401", fmt("{}: {}", where, why));
        auto response = error_body(401,
                                   "a valid API token is required: Authorization: Bearer "
                                   "NAME:SECRET (vmshadow token create)",
                                   kind_name(ErrorKind::permission));
        response.headers.emplace_back("WWW-Authenticate", "Bearer");
        return response;
    }
    if (role_allows(info->role, need)) return std::nullopt;
    if (log)
        log("403", fmt("{}: token '{}' has role {}, the route needs {}", where, info->name,
                       role_name(info->role), role_name(need)));
    return error_body(403,
                      fmt("token '{}' has role {}; this needs role {}", info->name,
                          role_name(info->role), role_name(need)),
                      kind_name(ErrorKind::permission));
}

net::HttpResponse not_found(const net::HttpRequest& request) {
    return error_body(404, fmt("no such API path: {}", printable(request.path, 200)),
                      kind_name(ErrorKind::not_found));
}

}  // namespace

net::HttpResponse ApiRoutes::handle(const net::HttpRequest& request) const {
    try {
        std::string_view path = request.path;
        bool api = path == "/api" || path.starts_with("/api/");
        if (!api && web_) return web_->serve(request);
        if (!path.starts_with(kPrefix)) return not_found(request);
        path.remove_prefix(kPrefix.size());
        auto parts = split(path);
        std::set<std::string_view> allowed;
        for (const auto& route : kRoutes) {
            auto params = match(route, parts);
            if (!params) continue;
            if (route.method != request.method) {
                allowed.insert(route.method);
                continue;
            }
            if (route.role)
                if (auto refusal = refuse(request, *route.role, tokens_, *sessions_, auth_log_))
                    return *refusal;
            if (auto ok = check_query(request, route.query); !ok) return error_response(ok.error());
            auto response = route.handler(
                Call{backend_, request, std::move(*params), *sessions_, tokens_, auth_log_});
            if (!response) return error_response(response.error());
            return *response;
        }
        if (allowed.empty()) return not_found(request);
        std::string allow;
        for (auto m : allowed) allow += (allow.empty() ? "" : ", ") + std::string(m);
        auto response = error_body(
            405, fmt("{} is not allowed here; use {}", printable(request.method, 10), allow),
            kind_name(ErrorKind::invalid_argument));
        response.headers.emplace_back("Allow", allow);
        return response;
    } catch (const std::exception& e) {
        // A bug (a JSON access the checks missed, memory): the client gets a 500, the
        // daemon keeps serving.
        return error_body(500, fmt("internal error: {}", printable(e.what(), 200)),
                          kind_name(ErrorKind::internal));
    } catch (...) {
        return error_body(500, "internal error", kind_name(ErrorKind::internal));
    }
}

}  // namespace vmshadow::daemon
