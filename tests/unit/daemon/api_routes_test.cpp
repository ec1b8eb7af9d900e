// SPDX-License-Identifier: MIT
#include "daemon/api_routes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/time_format.h"
#include "unit/common/temp_dir.h"

namespace vmshadow::daemon {
namespace {

using nlohmann::json;

// Records each call; answers with `answer` (or `error` when set).
class FakeBackend final : public ApiBackend {
  public:
    struct Call {
        std::string name;
        json args;
    };

    std::optional<Error> error;
    json answer = json::object();
    bool throw_json = false;
    std::string metrics_text = "vmshadow_queue_length 0\n";

    std::vector<Call> calls() const {
        std::lock_guard lock(mutex_);
        return calls_;
    }
    Call last() const {
        auto all = calls();
        return all.empty() ? Call{} : all.back();
    }

    Result<json> vms() override { return record("vms", {}); }
    Result<json> points(const std::string& vm) override { return record("points", {{"vm", vm}}); }
    Result<json> jobs() override { return record("jobs", {}); }
    Result<json> add_job(const json& job, const std::string& digest) override {
        return record("add_job", {{"job", job}, {"digest", digest}});
    }
    Result<json> edit_job(const std::string& id, const json& job,
                          const std::string& digest) override {
        return record("edit_job", {{"id", id}, {"job", job}, {"digest", digest}});
    }
    Result<json> remove_job(const std::string& id, const std::string& digest) override {
        return record("remove_job", {{"id", id}, {"digest", digest}});
    }
    Result<json> run_job(const std::string& id) override { return record("run_job", {{"id", id}}); }
    Result<json> tasks(const TaskFilter& f) override {
        return record("tasks", {{"state", f.state ? std::string(task_state_name(*f.state)) : ""},
                                {"job", f.job},
                                {"kind", f.kind},
                                {"before", f.before_id ? *f.before_id : -1},
                                {"limit", f.limit}});
    }
    Result<json> task(std::int64_t id) override { return record("task", {{"id", id}}); }
    Result<json> task_log(std::int64_t id, std::int64_t start, std::size_t limit) override {
        return record("task_log", {{"id", id}, {"start", start}, {"limit", limit}});
    }
    Result<json> abort_task(std::int64_t id) override { return record("abort_task", {{"id", id}}); }
    Result<json> repositories() override { return record("repositories", {}); }
    Result<json> repository_status(const std::string& name) override {
        return record("repository_status", {{"name", name}});
    }
    Result<json> restore(const json& request) override { return record("restore", request); }
    Result<json> verify(const json& request) override { return record("verify", request); }
    json health() override {
        (void)record("health", {});
        return {{"status", "ok"}};
    }
    std::string metrics() override {
        (void)record("metrics", {});
        return metrics_text;
    }
    Result<json> tokens() override { return record("tokens", {}); }
    Result<json> create_token(const std::string& name, Role role) override {
        return record("create_token", {{"name", name}, {"role", role_name(role)}});
    }
    Result<json> revoke_token(const std::string& name) override {
        return record("revoke_token", {{"name", name}});
    }
    Result<json> backup(const json& request) override { return record("backup", request); }
    Result<json> forget_point(const std::string& point, const std::string& repository) override {
        return record("forget_point", {{"point", point}, {"repository", repository}});
    }
    Result<json> prune_preview(const std::string& repository, const json& request) override {
        return record("prune_preview", {{"repository", repository}, {"request", request}});
    }
    Result<json> schedule_preview(const std::string& expr, int count) override {
        return record("schedule_preview", {{"expr", expr}, {"count", count}});
    }
    Result<json> replicas() override { return record("replicas", {}); }
    Result<json> replica_enable(const json& request) override {
        return record("replica_enable", {{"request", request}});
    }
    Result<json> replica_points(const std::string& vm) override {
        return record("replica_points", {{"vm", vm}});
    }
    Result<json> replica_action(const std::string& vm, const std::string& action,
                                const json& request) override {
        return record("replica_action", {{"vm", vm}, {"action", action}, {"request", request}});
    }

  private:
    Result<json> record(std::string name, json args) {
        {
            std::lock_guard lock(mutex_);
            calls_.push_back({std::move(name), std::move(args)});
        }
        if (throw_json) (void)json::array().at(3);  // throws out_of_range, as a bug would
        if (error) return std::unexpected(*error);
        return answer;
    }
    mutable std::mutex mutex_;
    std::vector<Call> calls_;
};

class ApiRoutesTest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto store = TokenStore::open(dir_.path / "tokens.json", clock_);
        ASSERT_TRUE(store) << store.error().message();
        tokens_ = std::move(*store);
        for (auto [name, role] : {std::pair{"auditor", Role::audit},
                                  {"oper", Role::operator_},
                                  {"boss", Role::admin}}) {
            auto token = tokens_->create(name, role);
            ASSERT_TRUE(token) << token.error().message();
            secrets_[role] = *token;
        }
        sessions_ = std::make_unique<SessionStore>(clock_);
        routes_ = std::make_unique<ApiRoutes>(
            backend_, *tokens_,
            [this](std::string_view what, std::string_view detail) {
                std::lock_guard lock(log_mutex_);
                log_.emplace_back(std::string(what), std::string(detail));
            },
            sessions_.get());
    }

    // A request as the HTTP server hands it over: query decoded, headers lower-cased.
    static net::HttpRequest request(std::string method, std::string path, std::string body = "",
                                    std::map<std::string, std::string> query = {}) {
        net::HttpRequest r;
        r.method = std::move(method);
        r.path = std::move(path);
        r.target = r.path;
        r.query = std::move(query);
        r.body = std::move(body);
        r.peer.unix_socket = true;
        r.peer.uid = 0;
        r.peer.address = "/run/vmshadow/api.sock";
        return r;
    }
    net::HttpRequest over_https(net::HttpRequest r, std::optional<Role> role) {
        r.peer = net::Peer{};
        r.peer.address = "127.0.0.1:50123";
        if (role) r.headers["authorization"] = "Bearer " + secrets_[*role];
        return r;
    }
    net::HttpResponse send(const net::HttpRequest& r) { return routes_->handle(r); }
    static json body_of(const net::HttpResponse& r) { return json::parse(r.body); }
    std::vector<std::pair<std::string, std::string>> log() {
        std::lock_guard lock(log_mutex_);
        return log_;
    }
    static std::string header(const net::HttpResponse& r, std::string_view name) {
        for (const auto& [k, v] : r.headers)
            if (k == name) return v;
        return "";
    }
    void expect_bad(const net::HttpRequest& r, std::string_view names) {
        auto calls_before = backend_.calls().size();
        auto response = send(r);
        EXPECT_EQ(response.status, 400) << r.method << " " << r.path << ": " << response.body;
        auto body = body_of(response);
        EXPECT_EQ(body["kind"], "invalid_argument") << response.body;
        EXPECT_NE(body["error"].get<std::string>().find(names), std::string::npos)
            << "error should name '" << names << "': " << response.body;
        EXPECT_EQ(backend_.calls().size(), calls_before) << "the backend must not be asked";
    }

    test::TempDir dir_;
    ManualClock clock_{Clock::time_point(std::chrono::seconds(1'800'000'000))};
    std::unique_ptr<TokenStore> tokens_;
    std::map<Role, std::string> secrets_;
    FakeBackend backend_;
    std::unique_ptr<SessionStore> sessions_;
    std::unique_ptr<ApiRoutes> routes_;
    std::mutex log_mutex_;
    std::vector<std::pair<std::string, std::string>> log_;
};

// ---- the OpenAPI document ---------------------------------------------------------------

std::set<std::string> openapi_routes(const json& doc) {
    std::set<std::string> out;
    for (const auto& [path, item] : doc.at("paths").items())
        for (const auto& [method, op] : item.items()) {
            std::string upper = method;
            for (auto& c : upper) c = static_cast<char>(std::toupper(c));
            out.insert(upper + " " + path);
        }
    return out;
}

TEST(ApiOpenApi, RouteListEqualsTheDocumentsPathsAndMethods) {
    auto doc = json::parse(ApiRoutes::openapi_json());
    auto list = ApiRoutes::route_list();
    std::set<std::string> routes(list.begin(), list.end());
    EXPECT_EQ(routes.size(), list.size()) << "a route is listed twice";
    EXPECT_EQ(routes, openapi_routes(doc));
    EXPECT_EQ(routes.size(), 32u);
}

TEST(ApiOpenApi, DocumentDeclaresBearerSecurityAndPublicRoutes) {
    auto doc = json::parse(ApiRoutes::openapi_json());
    EXPECT_TRUE(doc.at("openapi").get<std::string>().starts_with("3."));
    const auto& scheme = doc.at("components").at("securitySchemes").at("bearer");
    EXPECT_EQ(scheme.at("type"), "http");
    EXPECT_EQ(scheme.at("scheme"), "bearer");
    EXPECT_EQ(doc.at("security"), json::parse(R"([{"bearer": []}, {"session": []}])"));
    const auto& cookie = doc.at("components").at("securitySchemes").at("session");
    EXPECT_EQ(cookie.at("in"), "cookie");
    EXPECT_EQ(cookie.at("name"), std::string(kSessionCookie));
    for (const char* method : {"get", "post", "delete"})
        EXPECT_EQ(doc["paths"]["/api/v1/session"][method]["security"], json::array()) << method;
    EXPECT_EQ(doc["paths"]["/api/v1/health"]["get"]["security"], json::array());
    EXPECT_EQ(doc["paths"]["/api/v1/openapi.json"]["get"]["security"], json::array());
    EXPECT_FALSE(doc["paths"]["/api/v1/metrics"]["get"].contains("security"));
}

// Every operation: its path's {params} declared, a success response, and each $ref resolves.
TEST(ApiOpenApi, EveryOperationDescribesItsParametersAndResponses) {
    auto doc = json::parse(ApiRoutes::openapi_json());
    for (const auto& [path, item] : doc.at("paths").items())
        for (const auto& [method, op] : item.items()) {
            SCOPED_TRACE(method + " " + path);
            std::set<std::string> in_path;
            for (std::size_t pos = path.find('{'); pos != std::string::npos;
                 pos = path.find('{', pos + 1))
                in_path.insert(path.substr(pos + 1, path.find('}', pos) - pos - 1));
            std::set<std::string> declared;
            for (const auto& p : op.value("parameters", json::array()))
                if (p.at("in") == "path") {
                    EXPECT_EQ(p.at("required"), true);
                    declared.insert(p.at("name").get<std::string>());
                }
            EXPECT_EQ(in_path, declared);
            bool success = false;
            for (const auto& [code, response] : op.at("responses").items())
                success = success || code.starts_with("2");
            EXPECT_TRUE(success);
            if ((method == "post" || method == "put") && path != "/api/v1/jobs/{id}/run") {
                EXPECT_TRUE(op.contains("requestBody"));
            }
        }
    // Every reference points at something the document holds.
    std::vector<const json*> todo{&doc};
    while (!todo.empty()) {
        const json* node = todo.back();
        todo.pop_back();
        if (node->is_object() && node->contains("$ref")) {
            auto ref = node->at("$ref").get<std::string>();
            ASSERT_TRUE(ref.starts_with("#/")) << ref;
            EXPECT_TRUE(doc.contains(json::json_pointer(ref.substr(1)))) << ref;
        }
        if (node->is_structured())
            for (const auto& child : *node) todo.push_back(&child);
    }
}

// The query parameters the document declares for each operation are exactly those the route
// takes: probed with every parameter name any route knows.
TEST_F(ApiRoutesTest, OpenApiQueryParametersAreThoseEachRouteTakes) {
    auto doc = json::parse(ApiRoutes::openapi_json());
    std::set<std::string> all_names{"zz"};
    for (const auto& [path, item] : doc.at("paths").items())
        for (const auto& [method, op] : item.items())
            for (const auto& p : op.value("parameters", json::array()))
                if (p.at("in") == "query") all_names.insert(p.at("name").get<std::string>());
    EXPECT_GE(all_names.size(), 9u);
    for (const auto& [path, item] : doc.at("paths").items())
        for (const auto& [method, op] : item.items()) {
            std::set<std::string> declared;
            for (const auto& p : op.value("parameters", json::array()))
                if (p.at("in") == "query") declared.insert(p.at("name").get<std::string>());
            std::string concrete = path;
            for (auto [from, to] : {std::pair{"{id}", "7"}, {"{name}", "x"}})
                if (auto pos = concrete.find(from); pos != std::string::npos)
                    concrete.replace(pos, std::string_view(from).size(), to);
            std::string upper = method;
            for (auto& ch : upper) ch = static_cast<char>(std::toupper(ch));
            for (const auto& name : all_names) {
                auto r = send(request(upper, concrete, "", {{name, "?"}}));
                bool refused =
                    r.body.find("unknown query parameter '" + name + "'") != std::string::npos;
                EXPECT_EQ(!refused, declared.contains(name))
                    << upper << " " << path << " ?" << name << ": " << r.body;
            }
        }
}

// A value of the type a (resolved) schema asks for.
json sample_of(const json& doc, const json& schema) {
    if (schema.contains("$ref"))
        return sample_of(
            doc, doc.at(json::json_pointer(schema.at("$ref").get<std::string>().substr(1))));
    if (schema.contains("enum")) return schema.at("enum").at(0);
    auto type = schema.value("type", "");
    if (type == "boolean") return true;
    if (type == "integer") return 1;
    if (type == "object") return json::object();
    if (type == "array") return json::array({sample_of(doc, schema.at("items"))});
    return "x";
}

// The request bodies the document describes take exactly the fields the routes take: each
// declared field is accepted with its type, each required one is required, others refused.
TEST_F(ApiRoutesTest, OpenApiRequestBodiesAreThoseEachRouteTakes) {
    auto doc = json::parse(ApiRoutes::openapi_json());
    int bodies = 0;
    for (const auto& [path, item] : doc.at("paths").items())
        for (const auto& [method, op] : item.items()) {
            if (!op.contains("requestBody")) continue;
            ++bodies;
            json schema = op.at("requestBody").at("content").at("application/json").at("schema");
            if (schema.contains("$ref"))
                schema = doc.at(json::json_pointer(schema.at("$ref").get<std::string>().substr(1)));
            EXPECT_EQ(schema.at("additionalProperties"), false) << path;
            std::string concrete = path;
            if (auto pos = concrete.find("{id}"); pos != std::string::npos)
                concrete.replace(pos, 4, "n1");
            std::string upper = method;
            for (auto& ch : upper) ch = static_cast<char>(std::toupper(ch));
            auto send_body = [&](const json& body) {
                return send(request(upper, concrete, body.dump())).body;
            };
            json full = json::object();
            for (const auto& [name, prop] : schema.at("properties").items()) {
                full[name] = sample_of(doc, prop);
                auto answer = send_body(json{{name, full[name]}});
                EXPECT_EQ(answer.find("field '" + name + "'"), std::string::npos)
                    << upper << " " << path << " " << name << ": " << answer;
            }
            for (const auto& name : schema.value("required", json::array())) {
                json without = full;
                without.erase(name.get<std::string>());
                auto answer = send_body(without);
                EXPECT_NE(answer.find("field '" + name.get<std::string>() + "' is required"),
                          std::string::npos)
                    << upper << " " << path << ": " << answer;
            }
            full["zz"] = 1;
            EXPECT_NE(send_body(full).find("unknown field 'zz'"), std::string::npos) << path;
        }
    EXPECT_EQ(bodies, 10);  // DELETE /jobs/{id} takes its digest in the query (or a body)
}

TEST_F(ApiRoutesTest, OpenApiIsServedWithoutToken) {
    auto r = send(over_https(request("GET", "/api/v1/openapi.json"), std::nullopt));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.body, ApiRoutes::openapi_json());
}

// ---- authentication and roles -------------------------------------------------------------

TEST_F(ApiRoutesTest, HealthNeedsNoToken) {
    auto r = send(over_https(request("GET", "/api/v1/health"), std::nullopt));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(body_of(r)["status"], "ok");
    EXPECT_TRUE(log().empty());
}

TEST_F(ApiRoutesTest, UnixSocketPeerIsAdminWithoutToken) {
    auto r = send(request("POST", "/api/v1/tokens", R"({"name": "ci", "role": "operator"})"));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(backend_.last().name, "create_token");
    EXPECT_EQ(backend_.last().args, json::parse(R"({"name": "ci", "role": "operator"})"));
}

TEST_F(ApiRoutesTest, UnixSocketPeerOfAnotherUserNeedsAToken) {
    auto req = request("GET", "/api/v1/tokens");
    req.peer.uid = ::geteuid() == 4242 ? 4243 : 4242;
    EXPECT_EQ(send(req).status, 401);
    ASSERT_EQ(log().size(), 1u);
    EXPECT_EQ(log()[0].second, "/run/vmshadow/api.sock GET /api/v1/tokens: no bearer token");
    req.headers["authorization"] = "Bearer " + secrets_[Role::audit];
    EXPECT_EQ(send(req).status, 403);
    req.headers["authorization"] = "Bearer " + secrets_[Role::admin];
    EXPECT_EQ(send(req).status, 200);
    req.peer.uid = ::geteuid();  // the daemon's own user, as a test daemon runs
    req.headers.clear();
    EXPECT_EQ(send(req).status, 200);
}

TEST_F(ApiRoutesTest, HttpsWithoutTokenIs401WithWwwAuthenticateAndLogged) {
    auto r = send(over_https(request("GET", "/api/v1/vms"), std::nullopt));
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(header(r, "WWW-Authenticate"), "Bearer");
    EXPECT_EQ(body_of(r)["kind"], "permission");
    EXPECT_TRUE(backend_.calls().empty());
    ASSERT_EQ(log().size(), 1u);
    EXPECT_EQ(log()[0].first, "401");
    EXPECT_EQ(log()[0].second, "127.0.0.1:50123 GET /api/v1/vms: no bearer token");
}

TEST_F(ApiRoutesTest, WrongSecretOrMalformedHeaderIs401AndTheLogHoldsNoSecret) {
    const std::string secret = "deadbeefdeadbeefdeadbeef";
    for (std::string value :
         {"Bearer boss:" + secret, "Bearer " + secret, std::string("Basic Ym9zczpwdw=="),
          std::string("Bearer"), std::string("Bearer    "), "bearer auditor:" + secret}) {
        auto req = over_https(request("GET", "/api/v1/jobs"), std::nullopt);
        req.headers["authorization"] = value;
        auto r = send(req);
        EXPECT_EQ(r.status, 401) << value;
        EXPECT_EQ(header(r, "WWW-Authenticate"), "Bearer");
        EXPECT_EQ(r.body.find(secret), std::string::npos);
    }
    ASSERT_EQ(log().size(), 6u);
    EXPECT_EQ(log()[0].second, "127.0.0.1:50123 GET /api/v1/jobs: invalid token 'boss'");
    for (const auto& [what, detail] : log()) {
        EXPECT_EQ(what, "401");
        EXPECT_EQ(detail.find(secret), std::string::npos) << detail;
        EXPECT_EQ(detail.find("Ym9zczpwdw"), std::string::npos) << detail;
    }
    EXPECT_TRUE(backend_.calls().empty());
}

TEST_F(ApiRoutesTest, BearerSchemeIsCaseInsensitive) {
    auto req = over_https(request("GET", "/api/v1/vms"), std::nullopt);
    req.headers["authorization"] = "bEaReR " + secrets_[Role::audit];
    EXPECT_EQ(send(req).status, 200);
}

TEST_F(ApiRoutesTest, RoleWithoutTheRightIs403AndLoggedWithoutSecret) {
    auto r = send(over_https(request("POST", "/api/v1/jobs/nightly/run"), Role::audit));
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(body_of(r)["kind"], "permission");
    EXPECT_TRUE(backend_.calls().empty());
    ASSERT_EQ(log().size(), 1u);
    EXPECT_EQ(log()[0].first, "403");
    EXPECT_EQ(log()[0].second,
              "127.0.0.1:50123 POST /api/v1/jobs/nightly/run: token 'auditor' has role audit, "
              "the route needs operator");
    auto secret = secrets_[Role::audit].substr(secrets_[Role::audit].find(':') + 1);
    EXPECT_EQ(log()[0].second.find(secret), std::string::npos);
}

// The role table, route by route: the least role that may use it, and that the one below is
// refused. Each request is valid, so an allowed one reaches the backend.
TEST_F(ApiRoutesTest, EachRouteNeedsItsRole) {
    struct Case {
        std::string method, path, body;
        std::map<std::string, std::string> query;
        std::optional<Role> need;
    };
    const std::string job_edit = R"({"digest": "abc", "job": {"id": "n1", "kind": "backup"}})";
    std::vector<Case> cases{
        {"GET", "/api/v1/health", "", {}, std::nullopt},
        {"GET", "/api/v1/openapi.json", "", {}, std::nullopt},
        {"GET", "/api/v1/metrics", "", {}, Role::audit},
        {"GET", "/api/v1/vms", "", {}, Role::audit},
        {"GET", "/api/v1/points", "", {{"vm", "web1"}}, Role::audit},
        {"GET", "/api/v1/jobs", "", {}, Role::audit},
        {"POST", "/api/v1/jobs", job_edit, {}, Role::admin},
        {"PUT", "/api/v1/jobs/n1", job_edit, {}, Role::admin},
        {"DELETE", "/api/v1/jobs/n1", "", {{"digest", "abc"}}, Role::admin},
        {"POST", "/api/v1/jobs/n1/run", "", {}, Role::operator_},
        {"GET", "/api/v1/tasks", "", {}, Role::audit},
        {"GET", "/api/v1/tasks/7", "", {}, Role::audit},
        {"GET", "/api/v1/tasks/7/log", "", {}, Role::audit},
        {"DELETE", "/api/v1/tasks/7", "", {}, Role::operator_},
        {"GET", "/api/v1/repos", "", {}, Role::audit},
        {"GET", "/api/v1/repos/main/status", "", {}, Role::audit},
        {"POST", "/api/v1/restore", R"({"vm": "web1"})", {}, Role::operator_},
        {"POST", "/api/v1/verify", R"({"vm": "web1"})", {}, Role::operator_},
        {"GET", "/api/v1/tokens", "", {}, Role::admin},
        {"POST", "/api/v1/tokens", R"({"name": "x", "role": "audit"})", {}, Role::admin},
        {"DELETE", "/api/v1/tokens/x", "", {}, Role::admin},
        {"GET", "/api/v1/schedule/preview", "", {{"expr", "daily"}}, Role::audit},
        {"POST", "/api/v1/repos/main/prune-preview", R"({"keep_last": 2})", {}, Role::audit},
        {"DELETE", "/api/v1/points/abc123", "", {}, Role::operator_},
        {"POST", "/api/v1/backup", R"({"vm": "web1"})", {}, Role::operator_},
        {"GET", "/api/v1/replicas", "", {}, Role::audit},
        {"POST",
         "/api/v1/replicas",
         R"({"vm": "web1", "to": "hostb:8471", "interval_s": 300})",
         {},
         Role::operator_},
        {"GET", "/api/v1/replicas/web1/points", "", {}, Role::audit},
        {"POST", "/api/v1/replicas/web1/pause", "", {}, Role::operator_},
    };
    // The session routes are public and tested on their own (SessionSignIn...).
    const std::size_t session_routes = 3;
    EXPECT_EQ(cases.size() + session_routes, ApiRoutes::route_list().size())
        << "a route is missing here";
    for (const auto& c : cases) {
        for (auto role : {Role::audit, Role::operator_, Role::admin}) {
            auto r = send(over_https(request(c.method, c.path, c.body, c.query), role));
            bool allowed = !c.need || role_allows(role, *c.need);
            EXPECT_EQ(r.status / 100 == 2, allowed)
                << c.method << " " << c.path << " as " << role_name(role) << ": " << r.status << " "
                << r.body;
            if (!allowed) {
                EXPECT_EQ(r.status, 403);
            }
        }
        auto r = send(request(c.method, c.path, c.body, c.query));  // unix socket: admin
        EXPECT_EQ(r.status / 100, 2) << c.method << " " << c.path << ": " << r.body;
    }
}

// ---- paths and methods ---------------------------------------------------------------------

TEST_F(ApiRoutesTest, UnknownPathIs404WithNotFoundKind) {
    for (const char* path :
         {"/api/v1/nope", "/api/v2/vms", "/vms", "/", "", "/api/v1", "/api/v1/", "/api/v1/vms/",
          "/api/v1//vms", "/api/v1x/vms", "/api/v1/tasks/7/log/more", "/api/v1/repos//status",
          "/api/v1/jobs//run"}) {
        auto r = send(request("GET", path));
        EXPECT_EQ(r.status, 404) << path;
        auto body = body_of(r);
        EXPECT_EQ(body["kind"], "not_found") << path;
        EXPECT_TRUE(body["error"].is_string());
    }
}

TEST_F(ApiRoutesTest, WrongMethodOnKnownPathIs405WithAllow) {
    struct Case {
        const char* method;
        const char* path;
        const char* allow;
    };
    for (auto [method, path, allow] :
         {Case{"DELETE", "/api/v1/jobs", "GET, POST"},
          Case{"PATCH", "/api/v1/tasks/5", "DELETE, GET"},
          Case{"GET", "/api/v1/jobs/n1/run", "POST"}, Case{"POST", "/api/v1/health", "GET"},
          Case{"HEAD", "/api/v1/vms", "GET"}, Case{"GET", "/api/v1/restore", "POST"},
          Case{"PUT", "/api/v1/tokens/x", "DELETE"}}) {
        // Over HTTPS without a token: the method is checked first, nothing is run.
        auto r = send(over_https(request(method, path), std::nullopt));
        EXPECT_EQ(r.status, 405) << method << " " << path;
        EXPECT_EQ(header(r, "Allow"), allow) << method << " " << path;
        EXPECT_EQ(body_of(r)["kind"], "invalid_argument");
    }
    EXPECT_TRUE(backend_.calls().empty());
}

// ---- numbers in paths and queries -----------------------------------------------------------

TEST_F(ApiRoutesTest, BadTaskIdInPathIs400NamingIt) {
    for (const char* id : {"0", "-1", "abc", "4611686018427387905", "99999999999999999999999", "+5",
                           " 5", "5 ", "0x10", "1e3", "5.0", "9223372036854775808"}) {
        for (auto [method, suffix] : {std::pair{"GET", ""}, {"GET", "/log"}, {"DELETE", ""}})
            expect_bad(request(method, std::string("/api/v1/tasks/") + id + suffix), "'id'");
    }
    auto r = send(request("GET", "/api/v1/tasks/4611686018427387904"));  // 2^62: the largest
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(backend_.last().args["id"], 4611686018427387904LL);
}

TEST_F(ApiRoutesTest, TaskListQueryIsCheckedAndPassedOn) {
    auto tasks = [&](std::map<std::string, std::string> q) {
        return request("GET", "/api/v1/tasks", "", std::move(q));
    };
    for (const char* limit : {"0", "1001", "-1", "abc", "", "18446744073709551617"})
        expect_bad(tasks({{"limit", limit}}), "'limit'");
    for (const char* before : {"0", "x", "4611686018427387905"})
        expect_bad(tasks({{"before", before}}), "'before'");
    expect_bad(tasks({{"state", "done"}}), "'state'");
    expect_bad(tasks({{"kind", "dance"}}), "'kind'");
    expect_bad(tasks({{"job", "Bad Name"}}), "'job'");
    expect_bad(tasks({{"limt", "5"}}), "'limt'");

    ASSERT_EQ(send(tasks({})).status, 200);
    EXPECT_EQ(backend_.last().args,
              json::parse(R"({"state":"","job":"","kind":"","before":-1,"limit":100})"));
    ASSERT_EQ(send(tasks({{"state", "failed"},
                          {"job", "nightly"},
                          {"kind", "backup"},
                          {"before", "40"},
                          {"limit", "1000"}}))
                  .status,
              200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"state":"failed","job":"nightly",
                                                    "kind":"backup","before":40,"limit":1000})"));
    ASSERT_EQ(send(tasks({{"kind", "replica-cycle"}})).status, 200);
    EXPECT_EQ(backend_.last().args["kind"], "replica-cycle");
}

TEST_F(ApiRoutesTest, TaskLogPagesAreChecked) {
    auto log_req = [&](std::map<std::string, std::string> q) {
        return request("GET", "/api/v1/tasks/3/log", "", std::move(q));
    };
    ASSERT_EQ(send(log_req({})).status, 200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"id":3,"start":1,"limit":1000})"));
    ASSERT_EQ(send(log_req({{"start", "250"}, {"limit", "10000"}})).status, 200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"id":3,"start":250,"limit":10000})"));
    for (const char* start : {"-1", "x", "4611686018427387905"})
        expect_bad(log_req({{"start", start}}), "'start'");
    for (const char* limit : {"0", "10001", "many"})
        expect_bad(log_req({{"limit", limit}}), "'limit'");
    expect_bad(log_req({{"follow", "1"}}), "'follow'");
}

TEST_F(ApiRoutesTest, PointsNeedAValidVmName) {
    expect_bad(request("GET", "/api/v1/points"), "'vm'");
    expect_bad(request("GET", "/api/v1/points", "", {{"vm", ""}}), "'vm'");
    expect_bad(request("GET", "/api/v1/points", "", {{"vm", "a\nb"}}), "'vm'");
    expect_bad(request("GET", "/api/v1/points", "", {{"vm", std::string(300, 'a')}}), "'vm'");
    ASSERT_EQ(send(request("GET", "/api/v1/points", "", {{"vm", "we\"ird vm"}})).status, 200);
    EXPECT_EQ(backend_.last().args["vm"], "we\"ird vm");
}

TEST_F(ApiRoutesTest, NamesInPathsAreChecked) {
    expect_bad(request("PUT", "/api/v1/jobs/Bad.Name", R"({"digest":"d","job":{}})"), "'id'");
    expect_bad(request("POST", "/api/v1/jobs/-x/run"), "'id'");
    expect_bad(request("DELETE", "/api/v1/tokens/UPPER"), "'name'");
    expect_bad(request("GET", "/api/v1/repos/a\x01/status"), "'name'");
}

TEST_F(ApiRoutesTest, QueryParametersARouteDoesNotTakeAre400) {
    expect_bad(request("GET", "/api/v1/vms", "", {{"all", "1"}}), "'all'");
    expect_bad(request("POST", "/api/v1/restore", R"({"vm":"a"})", {{"vm", "a"}}), "'vm'");
}

// ---- bodies ---------------------------------------------------------------------------------

TEST_F(ApiRoutesTest, BodyThatIsNotAJsonObjectIs400) {
    std::string deep = std::string(100, '[') + std::string(100, ']');
    std::string deep_object;
    for (int i = 0; i < 40; ++i) deep_object += R"({"a":)";
    deep_object += "1" + std::string(40, '}');
    for (std::string body :
         {std::string(""), std::string("[]"), std::string("42"), std::string("null"),
          std::string("\"x\""), std::string("{bad"), std::string("{\"digest\": \"d\", \"job\": {}"),
          std::string("{} {}"), deep, deep_object, std::string("\xff\xfe{}")}) {
        expect_bad(request("POST", "/api/v1/jobs", body), "request body");
    }
}

TEST_F(ApiRoutesTest, DeepNestingAndNonUtf8StringsInABodyAre400) {
    std::string deep = std::string(33, '[') + std::string(33, ']');
    expect_bad(request("POST", "/api/v1/jobs", R"({"digest":"d","job":)" + deep + "}"), "deeper");
    std::string ok_depth =
        R"({"digest":"d","job":{"a":)" + std::string(30, '[') + std::string(30, ']') + "}}";
    EXPECT_EQ(send(request("POST", "/api/v1/jobs", ok_depth)).status, 200);
    expect_bad(request("POST", "/api/v1/verify", "{\"vm\":\"w\xff\"}"), "malformed JSON");
}

TEST_F(ApiRoutesTest, AuthenticationComesBeforeRequestChecks) {
    for (auto [method, path] : {std::pair{"GET", "/api/v1/tasks/0"},
                                {"POST", "/api/v1/jobs"},
                                {"DELETE", "/api/v1/tokens/BAD"}}) {
        EXPECT_EQ(send(over_https(request(method, path, "not json"), std::nullopt)).status, 401)
            << method << " " << path;
    }
    EXPECT_EQ(send(over_https(request("POST", "/api/v1/jobs", "not json"), Role::operator_)).status,
              403);
    EXPECT_TRUE(backend_.calls().empty());
}

TEST_F(ApiRoutesTest, JobBodyFieldsAreCheckedByNameAndType) {
    auto post = [&](const char* body) { return request("POST", "/api/v1/jobs", body); };
    expect_bad(post(R"({"job": {}})"), "'digest'");
    expect_bad(post(R"({"digest": "d"})"), "'job'");
    expect_bad(post(R"({"digest": 5, "job": {}})"), "'digest'");
    expect_bad(post(R"({"digest": "", "job": {}})"), "'digest'");
    expect_bad(post(R"({"digest": "d", "job": []})"), "'job'");
    expect_bad(post(R"({"digest": "d", "job": {}, "force": true})"), "'force'");
    auto r = send(post(R"({"digest": "d1", "job": {"id": "n1"}})"));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(backend_.last().args, json::parse(R"({"digest":"d1","job":{"id":"n1"}})"));
}

TEST_F(ApiRoutesTest, PutJobPassesThePathIdAndRefusesAnotherInTheBody) {
    expect_bad(request("PUT", "/api/v1/jobs/n1", R"({"digest":"d","job":{"id":"n2"}})"), "job.id");
    expect_bad(request("PUT", "/api/v1/jobs/n1", R"({"digest":"d","job":{"id":5}})"), "job.id");
    ASSERT_EQ(
        send(request("PUT", "/api/v1/jobs/n1", R"({"digest":"d","job":{"kind":"gc"}})")).status,
        200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"id":"n1","digest":"d","job":{"kind":"gc"}})"));
}

TEST_F(ApiRoutesTest, DeleteJobTakesTheDigestFromQueryOrBodyNotBoth) {
    ASSERT_EQ(send(request("DELETE", "/api/v1/jobs/n1", "", {{"digest", "q1"}})).status, 200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"id":"n1","digest":"q1"})"));
    ASSERT_EQ(send(request("DELETE", "/api/v1/jobs/n1", R"({"digest":"b1"})")).status, 200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"id":"n1","digest":"b1"})"));
    expect_bad(request("DELETE", "/api/v1/jobs/n1", R"({"digest":"b1"})", {{"digest", "q1"}}),
               "'digest'");
    expect_bad(request("DELETE", "/api/v1/jobs/n1"), "'digest'");
    expect_bad(request("DELETE", "/api/v1/jobs/n1", "", {{"digest", ""}}), "'digest'");
    expect_bad(request("DELETE", "/api/v1/jobs/n1", R"({"digest":"b","x":1})"), "'x'");
}

TEST_F(ApiRoutesTest, RunJobIs202WithTheTaskAndTakesNoFields) {
    backend_.answer = {{"task", 42}};
    auto r = send(request("POST", "/api/v1/jobs/nightly/run"));
    EXPECT_EQ(r.status, 202);
    EXPECT_EQ(body_of(r), json::parse(R"({"task": 42})"));
    EXPECT_EQ(backend_.last().args["id"], "nightly");
    EXPECT_EQ(send(request("POST", "/api/v1/jobs/nightly/run", "{}")).status, 202);
    expect_bad(request("POST", "/api/v1/jobs/nightly/run", R"({"now": true})"), "'now'");
    expect_bad(request("POST", "/api/v1/jobs/nightly/run", "[]"), "request body");
}

TEST_F(ApiRoutesTest, RestoreAndVerifyBodiesAreChecked) {
    backend_.answer = {{"task", 9}};
    auto r = send(request("POST", "/api/v1/restore",
                          R"({"vm":"web1","point":"p1","repository":"main","as":"web1-copy",
                              "replace":false,"start":true})"));
    EXPECT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(backend_.last().name, "restore");
    EXPECT_EQ(backend_.last().args["as"], "web1-copy");
    EXPECT_EQ(send(request("POST", "/api/v1/verify", R"({"vm":"web1","boot":true})")).status, 202);
    EXPECT_EQ(backend_.last().name, "verify");

    EXPECT_EQ(
        send(request("POST", "/api/v1/restore", R"({"point":"web1@latest","repository":"main"})"))
            .status,
        202);
    EXPECT_EQ(
        send(request("POST", "/api/v1/verify", R"({"point":"3f2a91","repository":"main"})")).status,
        202);
    expect_bad(request("POST", "/api/v1/restore", R"({"repository":"main"})"), "'vm' or 'point'");
    expect_bad(request("POST", "/api/v1/verify", "{}"), "'vm' or 'point'");
    expect_bad(request("POST", "/api/v1/restore", R"({"vm":"w","replace":"yes"})"), "'replace'");
    expect_bad(request("POST", "/api/v1/restore", R"({"vm":"w","boot":true})"), "'boot'");
    expect_bad(request("POST", "/api/v1/verify", R"({"vm":"w","as":"x"})"), "'as'");
    expect_bad(request("POST", "/api/v1/verify", R"({"vm":["w"]})"), "'vm'");
    expect_bad(request("POST", "/api/v1/verify", R"({"vm":null})"), "'vm' or 'point'");
    ASSERT_EQ(
        send(request("POST", "/api/v1/restore", R"({"vm":"w","point":null,"as":null})")).status,
        202);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"vm":"w"})")) << "a null optional is absent";
    expect_bad(request("POST", "/api/v1/jobs", R"({"digest":null,"job":{}})"), "'digest'");
}

TEST_F(ApiRoutesTest, TokenCreationChecksNameAndRole) {
    expect_bad(request("POST", "/api/v1/tokens", R"({"name":"ci","role":"root"})"), "'role'");
    expect_bad(request("POST", "/api/v1/tokens", R"({"name":"CI!","role":"audit"})"), "'name'");
    expect_bad(request("POST", "/api/v1/tokens", R"({"name":"ci"})"), "'role'");
    expect_bad(request("POST", "/api/v1/tokens", R"({"name":"ci","role":"audit","secret":"x"})"),
               "'secret'");
    EXPECT_EQ(send(request("DELETE", "/api/v1/tokens/ci")).status, 200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"name":"ci"})"));
}

// ---- results ----------------------------------------------------------------------------------

TEST(ApiErrors, EachKindHasItsStatus) {
    const std::map<ErrorKind, int> expected{{ErrorKind::invalid_argument, 400},
                                            {ErrorKind::not_found, 404},
                                            {ErrorKind::conflict, 409},
                                            {ErrorKind::locked, 409},
                                            {ErrorKind::cancelled, 409},
                                            {ErrorKind::permission, 403},
                                            {ErrorKind::unsupported, 501},
                                            {ErrorKind::unavailable, 503},
                                            {ErrorKind::timeout, 504},
                                            {ErrorKind::internal, 500},
                                            {ErrorKind::io, 500},
                                            {ErrorKind::corruption, 500}};
    for (auto [kind, status] : expected)
        EXPECT_EQ(net::http_status_for(kind), status) << kind_name(kind);
}

TEST_F(ApiRoutesTest, BackendErrorsBecomeErrorBodiesWithTheirStatus) {
    backend_.error = Error(ErrorKind::conflict, "config changed since digest 'abc': read it again");
    auto r = send(request("POST", "/api/v1/jobs", R"({"digest":"abc","job":{}})"));
    EXPECT_EQ(r.status, 409);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(body_of(r),
              json::parse(R"({"error":"config changed since digest 'abc': read it again",
                                          "kind":"conflict"})"));
    backend_.error = Error(ErrorKind::not_found, "no task 5");
    r = send(request("GET", "/api/v1/tasks/5"));
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(body_of(r)["kind"], "not_found");
}

TEST_F(ApiRoutesTest, ExceptionInsideARouteIs500NotACrash) {
    backend_.throw_json = true;
    auto r = send(request("GET", "/api/v1/vms"));
    EXPECT_EQ(r.status, 500);
    EXPECT_EQ(body_of(r)["kind"], "internal");
}

TEST_F(ApiRoutesTest, InvalidUtf8FromTheBackendIsReplacedNotThrown) {
    backend_.answer = {{"line", "bad \xff byte"}};
    auto r = send(request("GET", "/api/v1/vms"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(body_of(r)["line"], "bad \xEF\xBF\xBD byte");
}

TEST_F(ApiRoutesTest, MetricsArePrometheusText) {
    auto r = send(over_https(request("GET", "/api/v1/metrics"), Role::audit));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
    EXPECT_EQ(r.body, backend_.metrics_text);
    EXPECT_EQ(send(over_https(request("GET", "/api/v1/metrics"), std::nullopt)).status, 401);
}

TEST_F(ApiRoutesTest, HandleServesManyThreadsAtOnce) {
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                auto role = t % 2 ? Role::audit : Role::admin;
                auto r = send(
                    over_https(request("GET", "/api/v1/tasks/" + std::to_string(i + 1)), role));
                if (r.status == 200) ++ok;
            }
        });
    for (auto& th : threads) th.join();
    EXPECT_EQ(ok.load(), 1600);
}

// ---- browser sessions (the dashboard) --------------------------------------------------------

class ApiSessionTest : public ApiRoutesTest {
  protected:
    // Signs in over HTTPS with the role's token: the session's JSON and the cookie's value.
    std::pair<json, std::string> sign_in(Role role) {
        auto r = send(
            over_https(request("POST", "/api/v1/session", json{{"token", secrets_[role]}}.dump()),
                       std::nullopt));
        EXPECT_EQ(r.status, 200) << r.body;
        std::string cookie = header(r, "Set-Cookie");
        std::string value = cookie.substr(0, cookie.find(';'));
        value = value.substr(value.find('=') + 1);
        return {body_of(r), value};
    }
    net::HttpRequest with_cookie(net::HttpRequest r, const std::string& cookie,
                                 const std::string& csrf = "") {
        r = over_https(std::move(r), std::nullopt);
        r.headers["cookie"] = "theme=dark; " + std::string(kSessionCookie) + "=" + cookie;
        if (!csrf.empty()) r.headers["x-csrf-token"] = csrf;
        return r;
    }
};

bool is_hex64(const std::string& text) {
    return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

TEST_F(ApiSessionTest, SignInSetsAnHttpOnlySecureStrictCookieAndAnswersWhoWithCsrf) {
    auto r = send(over_https(
        request("POST", "/api/v1/session", json{{"token", secrets_[Role::operator_]}}.dump()),
        std::nullopt));
    ASSERT_EQ(r.status, 200) << r.body;
    auto body = body_of(r);
    EXPECT_EQ(body["name"], "oper");
    EXPECT_EQ(body["role"], "operator");
    EXPECT_TRUE(is_hex64(body["csrf"].get<std::string>())) << body;
    EXPECT_EQ(body["expires"], iso8601_utc(1'800'000'000 + 30 * 60));  // idle timeout first
    std::string cookie = header(r, "Set-Cookie");
    ASSERT_TRUE(cookie.starts_with("vmshadow_session=")) << cookie;
    std::string id = cookie.substr(17, 64);
    EXPECT_TRUE(is_hex64(id)) << cookie;
    EXPECT_NE(id, body["csrf"]);
    EXPECT_EQ(cookie.substr(17 + 64), "; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=28800");
    EXPECT_TRUE(backend_.calls().empty());
    // Two sign-ins are two sessions with their own ids and CSRF values.
    auto [other, other_id] = sign_in(Role::operator_);
    EXPECT_NE(other_id, id);
    EXPECT_NE(other["csrf"], body["csrf"]);
}

TEST_F(ApiSessionTest, SignInWithAWrongTokenIs401AndLoggedWithoutTheSecret) {
    const std::string secret = "0123456789abcdef0123456789abcdef";
    for (std::string token : {"boss:" + secret, secret, std::string("nobody:x")}) {
        auto r = send(over_https(request("POST", "/api/v1/session", json{{"token", token}}.dump()),
                                 std::nullopt));
        EXPECT_EQ(r.status, 401) << token;
        EXPECT_EQ(body_of(r)["kind"], "permission");
        EXPECT_EQ(header(r, "Set-Cookie"), "");
    }
    ASSERT_EQ(log().size(), 3u);
    EXPECT_EQ(log()[0].first, "401");
    EXPECT_EQ(log()[0].second,
              "127.0.0.1:50123 POST /api/v1/session: sign-in with invalid token 'boss'");
    for (const auto& [what, detail] : log()) EXPECT_EQ(detail.find(secret), std::string::npos);
    EXPECT_EQ(sessions_->size(), 0u);
    expect_bad(request("POST", "/api/v1/session", R"({"token": ""})"), "'token'");
    expect_bad(request("POST", "/api/v1/session", R"({"token": "a", "role": "admin"})"), "'role'");
}

TEST_F(ApiSessionTest, CookieAuthenticatesWithTheTokensRole) {
    auto [session, cookie] = sign_in(Role::operator_);
    const std::string csrf = session["csrf"];
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/vms"), cookie)).status, 200);
    auto who = send(with_cookie(request("GET", "/api/v1/session"), cookie));
    ASSERT_EQ(who.status, 200) << who.body;
    EXPECT_EQ(body_of(who)["name"], "oper");
    EXPECT_EQ(body_of(who)["csrf"], csrf);
    EXPECT_EQ(send(with_cookie(request("POST", "/api/v1/jobs/n1/run"), cookie, csrf)).status, 202);
    EXPECT_EQ(backend_.last().name, "run_job");
    // Its role is the token's: an operator may not edit tokens.
    auto r = send(with_cookie(request("DELETE", "/api/v1/tokens/x"), cookie, csrf));
    EXPECT_EQ(r.status, 403);
    auto [audit, audit_cookie] = sign_in(Role::audit);
    r = send(with_cookie(request("POST", "/api/v1/backup", R"({"vm": "web1"})"), audit_cookie,
                         audit["csrf"]));
    EXPECT_EQ(r.status, 403) << r.body;
    EXPECT_EQ(body_of(r)["kind"], "permission");
}

TEST_F(ApiSessionTest, ChangeWithoutOrWithAWrongCsrfTokenIs403AndRunsNothing) {
    auto [session, cookie] = sign_in(Role::admin);
    const std::string csrf = session["csrf"];
    std::string wrong = csrf;
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    struct Case {
        const char* method;
        const char* path;
        const char* body;
    };
    for (auto [method, path, body] :
         {Case{"POST", "/api/v1/jobs/n1/run", ""}, Case{"DELETE", "/api/v1/tasks/7", ""},
          Case{"PUT", "/api/v1/jobs/n1", R"({"digest": "d", "job": {}})"},
          Case{"POST", "/api/v1/repos/main/prune-preview", R"({"keep_last": 1})"},
          Case{"POST", "/api/v1/tokens", R"({"name": "x", "role": "audit"})"},
          Case{"POST", "/api/v1/replicas/web1/failover", ""},
          Case{"POST", "/api/v1/replicas", R"({"vm": "w", "to": "b:1", "interval_s": 30})"}}) {
        for (const std::string& token : {std::string(), wrong, csrf.substr(0, 63), csrf + "0"}) {
            auto r = send(with_cookie(request(method, path, body), cookie, token));
            EXPECT_EQ(r.status, 403) << method << " " << path << " csrf '" << token << "'";
            EXPECT_EQ(body_of(r)["kind"], "permission");
        }
    }
    EXPECT_TRUE(backend_.calls().empty());
    EXPECT_EQ(log().back().first, "403");
    EXPECT_NE(log().back().second.find("X-CSRF-Token"), std::string::npos);
    // A GET needs none; a Bearer request never does.
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/tasks/7"), cookie)).status, 200);
    EXPECT_EQ(send(over_https(request("POST", "/api/v1/jobs/n1/run"), Role::admin)).status, 202);
}

TEST_F(ApiSessionTest, UnknownCookieIs401AndABearerTokenWinsOverTheCookie) {
    auto r = send(with_cookie(request("GET", "/api/v1/vms"), std::string(64, 'a')));
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(log().back().second, "127.0.0.1:50123 GET /api/v1/vms: unknown or expired session");
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/session"), "")).status, 401);
    auto [session, cookie] = sign_in(Role::admin);
    // With Authorization the cookie is not looked at: the audit token decides.
    auto req = with_cookie(request("GET", "/api/v1/tokens"), cookie);
    req.headers["authorization"] = "Bearer " + secrets_[Role::audit];
    EXPECT_EQ(send(req).status, 403);
}

TEST_F(ApiSessionTest, SessionEndsAfterThirtyIdleMinutesOrEightHours) {
    auto [idle, idle_cookie] = sign_in(Role::audit);
    clock_.advance(std::chrono::minutes(29));
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/vms"), idle_cookie)).status, 200);
    clock_.advance(std::chrono::minutes(29));  // 29 min after its last use: alive
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/vms"), idle_cookie)).status, 200);
    clock_.advance(std::chrono::minutes(31));
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/vms"), idle_cookie)).status, 401);

    auto [busy, busy_cookie] = sign_in(Role::audit);
    for (int i = 0; i < 8 * 3; ++i) {  // used every 20 minutes for 8 hours
        clock_.advance(std::chrono::minutes(20));
        auto r = send(with_cookie(request("GET", "/api/v1/session"), busy_cookie));
        EXPECT_EQ(r.status, i < 8 * 3 - 1 ? 200 : 401) << "after " << (i + 1) * 20 << " min";
    }
}

TEST_F(ApiSessionTest, SignOutEndsTheSessionAndClearsTheCookie) {
    auto [session, cookie] = sign_in(Role::operator_);
    auto refused = send(with_cookie(request("DELETE", "/api/v1/session"), cookie));
    EXPECT_EQ(refused.status, 403) << "sign-out is a change: it needs the CSRF value";
    auto r = send(with_cookie(request("DELETE", "/api/v1/session"), cookie, session["csrf"]));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(body_of(r)["signed_out"], true);
    EXPECT_EQ(header(r, "Set-Cookie"),
              "vmshadow_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/session"), cookie)).status, 401);
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/vms"), cookie)).status, 401);
    // Signing out again (a stale cookie) still clears it.
    r = send(with_cookie(request("DELETE", "/api/v1/session"), cookie, session["csrf"]));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(body_of(r)["signed_out"], false);
}

TEST_F(ApiSessionTest, RevokingTheTokensSessionsEndsThem) {
    auto [session, cookie] = sign_in(Role::operator_);
    auto [other, other_cookie] = sign_in(Role::audit);
    sessions_->remove_token("oper");  // what the daemon's revoke_token does
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/vms"), cookie)).status, 401);
    EXPECT_EQ(send(with_cookie(request("GET", "/api/v1/vms"), other_cookie)).status, 200);
}

// ---- the dashboard's previews and actions ---------------------------------------------

TEST_F(ApiRoutesTest, SchedulePreviewQueryIsChecked) {
    ASSERT_EQ(
        send(request("GET", "/api/v1/schedule/preview", "", {{"expr", "Mon..Fri 22:00"}})).status,
        200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"expr": "Mon..Fri 22:00", "count": 5})"));
    ASSERT_EQ(
        send(request("GET", "/api/v1/schedule/preview", "", {{"expr", "daily"}, {"count", "20"}}))
            .status,
        200);
    EXPECT_EQ(backend_.last().args["count"], 20);
    expect_bad(request("GET", "/api/v1/schedule/preview"), "'expr'");
    expect_bad(request("GET", "/api/v1/schedule/preview", "", {{"expr", ""}}), "'expr'");
    expect_bad(request("GET", "/api/v1/schedule/preview", "", {{"expr", "daily\n"}}), "'expr'");
    for (const char* count : {"0", "21", "-1", "x", "5.0", ""})
        expect_bad(
            request("GET", "/api/v1/schedule/preview", "", {{"expr", "daily"}, {"count", count}}),
            "'count'");
}

TEST_F(ApiRoutesTest, PrunePreviewBodyIsCheckedAndPassedOn) {
    const std::string path = "/api/v1/repos/main/prune-preview";
    auto r = send(request("POST", path, R"({"vm": "web1", "keep_daily": 7, "keep_yearly": 2})"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(backend_.last().args,
              json::parse(R"({"repository": "main", "request": {"vm": "web1", "keep_daily": 7,
                              "keep_yearly": 2}})"));
    for (const char* value : {"0", "-1", "1.5", "\"3\"", "1000001", "true"})
        expect_bad(request("POST", path, std::string(R"({"keep_last": )") + value + "}"),
                   "'keep_last'");
    expect_bad(request("POST", path, "{}"), "keep_");
    expect_bad(request("POST", path, R"({"vm": "web1", "keep_last": null})"), "keep_");
    expect_bad(request("POST", path, R"({"keep_last": 1, "keep_forever": 1})"), "'keep_forever'");
    expect_bad(request("POST", path, R"({"keep_last": 1, "vm": "a\u0001"})"), "'vm'");
    expect_bad(request("POST", "/api/v1/repos/a\x01/prune-preview", R"({"keep_last": 1})"),
               "'name'");
}

TEST_F(ApiRoutesTest, ForgetPointPassesTheIdAndTheRepository) {
    ASSERT_EQ(send(request("DELETE", "/api/v1/points/web1@latest")).status, 200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"point": "web1@latest", "repository": ""})"));
    ASSERT_EQ(send(request("DELETE", "/api/v1/points/ab12", "", {{"repository", "main"}})).status,
              200);
    EXPECT_EQ(backend_.last().args, json::parse(R"({"point": "ab12", "repository": "main"})"));
    expect_bad(request("DELETE", "/api/v1/points/ab12", "", {{"repository", ""}}), "'repository'");
    expect_bad(request("DELETE", "/api/v1/points/a\x02"), "'id'");
    expect_bad(request("DELETE", "/api/v1/points/ab12", R"({"force": true})"), "'force'");
    backend_.error = Error(ErrorKind::locked, "repository is locked by gc");
    EXPECT_EQ(send(request("DELETE", "/api/v1/points/ab12")).status, 409);
}

TEST_F(ApiRoutesTest, BackupBodyIsCheckedAndStartsATask) {
    backend_.answer = json{{"task", 9}};
    auto r = send(request("POST", "/api/v1/backup", R"({"vm": "web1", "method": "crash"})"));
    ASSERT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(body_of(r), json::parse(R"({"task": 9})"));
    EXPECT_EQ(backend_.last().args, json::parse(R"({"vm": "web1", "method": "crash"})"));
    expect_bad(request("POST", "/api/v1/backup", "{}"), "'vm'");
    expect_bad(request("POST", "/api/v1/backup", R"({"vm": "web1", "method": "fast"})"),
               "'method'");
    expect_bad(request("POST", "/api/v1/backup", R"({"vm": "web*"})"), "'vm'");
    expect_bad(request("POST", "/api/v1/backup", R"({"vm": "web1", "repository": 3})"),
               "'repository'");
}

TEST_F(ApiRoutesTest, PathsOutsideTheApiAreTheDashboardsFiles) {
    test::TempDir web;
    { std::ofstream(web.path / "index.html") << "<!doctype html><title>vmshadow</title>"; }
    StaticFiles files(web.path);
    ApiRoutes routes(backend_, *tokens_, nullptr, sessions_.get(), &files);
    auto r = routes.handle(over_https(request("GET", "/"), std::nullopt));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
    EXPECT_NE(r.body.find("vmshadow"), std::string::npos);
    // Under /api/ it stays the API: 404 JSON, and 401 without a token.
    r = routes.handle(over_https(request("GET", "/api/v1/nope"), std::nullopt));
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(body_of(r)["kind"], "not_found");
    EXPECT_EQ(routes.handle(over_https(request("GET", "/api/v1/vms"), std::nullopt)).status, 401);
    EXPECT_EQ(routes.handle(request("GET", "/api")).status, 404);
}

// ---- replica ---------------------------------------------------------------------------

TEST_F(ApiRoutesTest, ReplicaListAndPointsReachTheBackend) {
    backend_.answer = json{{"replicas", json::array()}};
    auto r = send(request("GET", "/api/v1/replicas"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(body_of(r), json::parse(R"({"replicas": []})"));
    EXPECT_EQ(backend_.last().name, "replicas");
    // The server hands the path over decoded; a name with a space is a name.
    r = send(request("GET", "/api/v1/replicas/web 1/points"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(backend_.last().name, "replica_points");
    EXPECT_EQ(backend_.last().args["vm"], "web 1");
    expect_bad(request("GET", "/api/v1/replicas/w\x01/points"), "'vm'");
    expect_bad(request("GET", "/api/v1/replicas/" + std::string(300, 'v') + "/points"), "'vm'");
    backend_.error = Error(ErrorKind::not_found, "no replica of 'web9' on this host");
    EXPECT_EQ(send(request("GET", "/api/v1/replicas/web9/points")).status, 404);
}

TEST_F(ApiRoutesTest, ReplicaEnablePassesTheCheckedRequestOn) {
    const auto full = json::parse(R"({"vm": "web1", "to": "hostb.example:8471",
        "interval_s": 30, "history": 24, "app_consistent_every_h": 4,
        "exclude_disks": ["vdb", "vdc"], "bandwidth_mib": 100000,
        "start_at": "2026-12-07T22:00:00Z", "initial": "network"})");
    backend_.answer = json{{"vm", "web1"}, {"state", "initial"}};
    auto r = send(request("POST", "/api/v1/replicas", full.dump()));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(backend_.last().name, "replica_enable");
    EXPECT_EQ(backend_.last().args["request"], full);
    for (const char* ok : {R"({"vm": "w", "to": "127.0.0.2:8471", "interval_s": 900,
                               "history": 0, "app_consistent_every_h": 0, "bandwidth_mib": 0,
                               "start_at": "23:59"})",
                           R"({"vm": "w", "to": "[::1]:8471", "interval_s": 300,
                               "initial": "repository", "seed_repository": "/srv/repo",
                               "seed_point": "web1@latest"})",
                           R"({"vm": "w", "to": "b:1", "interval_s": 300, "initial": "offline"})"})
        EXPECT_EQ(send(request("POST", "/api/v1/replicas", ok)).status, 200) << ok;
}

TEST_F(ApiRoutesTest, ReplicaEnableRefusesOutOfRangeValuesNamingTheField) {
    auto with = [](json change) {
        json body = json::parse(R"({"vm": "web1", "to": "hostb:8471", "interval_s": 300})");
        for (auto& [k, v] : change.items()) body[k] = v;
        return request("POST", "/api/v1/replicas", body.dump());
    };
    for (int bad_interval : {0, 29, 31, 60, 301, 899, 901, -300})
        expect_bad(with({{"interval_s", bad_interval}}), "'interval_s'");
    expect_bad(with({{"interval_s", "5m"}}), "'interval_s'");
    expect_bad(with({{"interval_s", 300.5}}), "'interval_s'");
    expect_bad(with({{"history", 25}}), "'history'");
    expect_bad(with({{"history", -1}}), "'history'");
    expect_bad(with({{"app_consistent_every_h", 25}}), "'app_consistent_every_h'");
    expect_bad(with({{"bandwidth_mib", 100001}}), "'bandwidth_mib'");
    expect_bad(with({{"bandwidth_mib", json::parse("18446744073709551615")}}), "'bandwidth_mib'");
    for (const char* to : {"hostb", "hostb:", ":8471", "hostb:0", "hostb:65536", "hostb:84x1",
                           "host b:8471", "https://hostb:8471", "[::1:8471"})
        expect_bad(with({{"to", to}}), "'to'");
    expect_bad(with({{"to", std::string(300, 'h') + ":1"}}), "'to'");
    expect_bad(with({{"vm", "we\nb"}}), "'vm'");
    expect_bad(with({{"exclude_disks", "vdb"}}), "'exclude_disks'");
    expect_bad(with({{"exclude_disks", {"vdb", 3}}}), "'exclude_disks'");
    expect_bad(with({{"exclude_disks", {""}}}), "'exclude_disks'");
    expect_bad(with({{"exclude_disks", std::vector<std::string>(65, "vdb")}}), "'exclude_disks'");
    for (const char* at : {"tomorrow", "24:00", "12:60", "2026-13-01T00:00:00Z", "7:00"})
        expect_bad(with({{"start_at", at}}), "'start_at'");
    expect_bad(with({{"initial", "usb"}}), "'initial'");
    expect_bad(with({{"initial", "repository"}}), "'seed_repository'");
    expect_bad(with({{"initial", "repository"}, {"seed_repository", "/srv/repo"}}), "'seed_point'");
    expect_bad(with({{"seed_point", "abc"}}), "'seed_point'");
    expect_bad(with({{"initial", "repository"},
                     {"seed_repository", "relative/repo"},
                     {"seed_point", "abc"}}),
               "'seed_repository'");
    expect_bad(with({{"compress", true}}), "'compress'");
    expect_bad(request("POST", "/api/v1/replicas", R"({"vm": "web1", "interval_s": 300})"), "'to'");
    expect_bad(request("POST", "/api/v1/replicas", R"({"vm": "web1", "to": "b:1"})"),
               "'interval_s'");
    expect_bad(request("POST", "/api/v1/replicas", ""), "request body");
}

TEST_F(ApiRoutesTest, ReplicaActionsTakeOnlyTheirFieldsAndLongOnesAre202) {
    backend_.answer = json{{"ok", true}};
    for (const char* action : {"pause", "resume", "stop-test", "commit"}) {
        auto r = send(request("POST", std::string("/api/v1/replicas/web1/") + action));
        EXPECT_EQ(r.status, 200) << action << ": " << r.body;
        EXPECT_EQ(backend_.last().args,
                  json({{"vm", "web1"}, {"action", action}, {"request", json::object()}}));
    }
    backend_.answer = json{{"task", 12}};
    auto r = send(request("POST", "/api/v1/replicas/web1/failover", R"({"point": 3})"));
    ASSERT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(body_of(r), json::parse(R"({"task": 12})"));
    EXPECT_EQ(backend_.last().args["request"], json::parse(R"({"point": 3})"));
    for (const char* action : {"cycle", "resync", "test-failover", "planned-failover", "reverse"})
        EXPECT_EQ(send(request("POST", std::string("/api/v1/replicas/web1/") + action)).status, 202)
            << action;
    r = send(request("POST", "/api/v1/replicas/-/import-initial", R"({"dir": "/srv/seed"})"));
    EXPECT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(backend_.last().args["request"], json::parse(R"({"dir": "/srv/seed"})"));
    backend_.answer = json{{"ok", true}};
    r = send(request("POST", "/api/v1/replicas/web1/remove", R"({"on_replica": true})"));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(backend_.last().args["request"], json::parse(R"({"on_replica": true})"));

    expect_bad(request("POST", "/api/v1/replicas/web1/pause", R"({"point": 1})"), "'point'");
    expect_bad(request("POST", "/api/v1/replicas/web1/cycle", R"({"dir": "/x"})"), "'dir'");
    expect_bad(request("POST", "/api/v1/replicas/web1/remove", R"({"on_replica": 1})"),
               "'on_replica'");
    expect_bad(request("POST", "/api/v1/replicas/web1/failover", R"({"point": -1})"), "'point'");
    expect_bad(request("POST", "/api/v1/replicas/web1/failover", R"({"point": "3"})"), "'point'");
    expect_bad(request("POST", "/api/v1/replicas/web1/export-initial", "{}"), "'dir'");
    expect_bad(request("POST", "/api/v1/replicas/web1/export-initial", R"({"dir": "seed"})"),
               "'dir'");
    expect_bad(request("POST", "/api/v1/replicas/web1/pause", R"({"force": true})"), "'force'");
    expect_bad(request("POST", "/api/v1/replicas/w\x7f\x01/pause"), "'vm'");
}

TEST_F(ApiRoutesTest, UnknownReplicaActionIs404NamingIt) {
    auto r = send(request("POST", "/api/v1/replicas/web1/explode"));
    EXPECT_EQ(r.status, 404) << r.body;
    EXPECT_EQ(body_of(r)["kind"], "not_found");
    EXPECT_NE(r.body.find("no replica action 'explode'"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("planned-failover"), std::string::npos) << r.body;
    // POST to the points path is an action named "points", which does not exist either.
    EXPECT_EQ(send(request("POST", "/api/v1/replicas/web1/points")).status, 404);
    // An action by GET: the path exists for POST only.
    r = send(request("GET", "/api/v1/replicas/web1/pause"));
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(header(r, "Allow"), "POST");
    EXPECT_TRUE(backend_.calls().empty());
}

TEST_F(ApiRoutesTest, ReplicaChangesNeedOperatorAndListingNeedsAToken) {
    auto r = send(over_https(request("POST", "/api/v1/replicas/web1/failover"), Role::audit));
    EXPECT_EQ(r.status, 403);
    r = send(over_https(request("GET", "/api/v1/replicas"), std::nullopt));
    EXPECT_EQ(r.status, 401);
    EXPECT_TRUE(backend_.calls().empty());
    r = send(over_https(request("POST", "/api/v1/replicas/web1/failover"), Role::operator_));
    EXPECT_EQ(r.status / 100, 2) << r.body;
}

}  // namespace
}  // namespace vmshadow::daemon
