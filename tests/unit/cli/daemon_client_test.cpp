// SPDX-License-Identifier: MIT
// The command line as a client of vmshadowd: against a small fake daemon (net::HttpServer on
// a unix socket in a temp dir, answering from a handler the test gives), the requests the
// commands send, what they print, and how the daemon's errors become exit codes.
#include "cli/daemon_client.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "cli/app.h"
#include "cli/exit_code.h"
#include "net/http_server.h"
#include "net/tls_identity.h"
#include "unit/cli/fake_daemon.h"

namespace vmshadow::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

TEST(DaemonClient, GetsTheAnswersJsonOverTheSocket) {
    FakeDaemon daemon([](const net::HttpRequest&) { return answer(200, {{"status", "ok"}}); });
    auto c = daemon.connection();
    auto health = daemon_call(c, "GET", "/health");
    ASSERT_TRUE(health) << health.error().message();
    EXPECT_EQ((*health)["status"], "ok");
    // Root needs no token on the socket; someone else the socket lets in sends theirs.
    c.token = "ci:secret";
    ASSERT_TRUE(daemon_call(c, "GET", "/health"));
    auto requests = daemon.requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[0].method, "GET");
    EXPECT_EQ(requests[0].path, "/api/v1/health");
    EXPECT_TRUE(requests[0].peer.unix_socket);
    EXPECT_EQ(requests[0].header("authorization"), "");
    EXPECT_EQ(requests[1].header("authorization"), "Bearer ci:secret");
}

TEST(DaemonClient, HttpsSendsTheTokenToThePinnedCertificateOnly) {
    FakeDaemon daemon([](const net::HttpRequest&) { return answer(200, json::array()); }, true);
    DaemonConnection c;
    c.url = daemon.https_url();
    c.fingerprint = daemon.fingerprint();
    c.token = "ci:0123";
    c.timeout = 5000ms;
    ASSERT_TRUE(check_daemon_connection(c));
    auto vms = daemon_call(c, "GET", "/vms");
    ASSERT_TRUE(vms) << vms.error().message();
    auto requests = daemon.requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].header("authorization"), "Bearer ci:0123");
    EXPECT_FALSE(requests[0].peer.unix_socket);

    // Another certificate than the pinned one, or none pinned (self-signed): refused before
    // the request, so the token is not sent.
    c.fingerprint = std::string(64, 'a');
    auto wrong = daemon_call(c, "GET", "/vms");
    ASSERT_FALSE(wrong);
    EXPECT_EQ(wrong.error().kind(), ErrorKind::permission) << wrong.error().message();
    c.fingerprint.clear();
    auto unpinned = daemon_call(c, "GET", "/vms");
    ASSERT_FALSE(unpinned);
    EXPECT_EQ(unpinned.error().kind(), ErrorKind::permission) << unpinned.error().message();
    EXPECT_NE(unpinned.error().message().find("--fingerprint"), std::string::npos);
    EXPECT_EQ(daemon.requests().size(), 1u);
}

TEST(DaemonClient, ApiErrorsKeepTheirKindAndExitCode) {
    FakeDaemon daemon([](const net::HttpRequest& r) {
        if (r.path.ends_with("/stale"))
            return answer(409, {{"error", "the config changed"}, {"kind", "conflict"}});
        if (r.path.ends_with("/locked"))
            return answer(409, {{"error", "repository locked"}, {"kind", "locked"}});
        net::HttpResponse bare;
        bare.status = 503;
        bare.content_type = "text/plain";
        bare.body = "busy";
        return bare;
    });
    auto stale = daemon_call(daemon.connection(), "PUT", "/stale", json::object());
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().kind(), ErrorKind::conflict);
    EXPECT_EQ(stale.error().message(), "the config changed");
    EXPECT_EQ(exit_code_for(stale.error().kind()), exit_conflict);
    auto locked = daemon_call(daemon.connection(), "GET", "/locked");
    ASSERT_FALSE(locked);
    EXPECT_EQ(exit_code_for(locked.error().kind()), exit_locked);
    auto bare = daemon_call(daemon.connection(), "GET", "/other");
    ASSERT_FALSE(bare);
    EXPECT_EQ(bare.error().kind(), ErrorKind::unavailable);
    EXPECT_NE(bare.error().message().find("HTTP 503"), std::string::npos);
}

TEST(DaemonClient, ErrorBodiesMapBackToKinds) {
    EXPECT_EQ(api_error(404, R"({"error": "job 'x' does not exist", "kind": "not_found"})").kind(),
              ErrorKind::not_found);
    // The kind the body names wins over the status; an unknown kind falls back to the status.
    EXPECT_EQ(api_error(500, R"({"error": "e", "kind": "corruption"})").kind(),
              ErrorKind::corruption);
    EXPECT_EQ(api_error(403, R"({"error": "e", "kind": "no-such-kind"})").kind(),
              ErrorKind::permission);
    EXPECT_EQ(api_error(400, "not json").kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(api_error(413, "").kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(api_error(504, "").kind(), ErrorKind::timeout);
    EXPECT_EQ(api_error(500, "[1]").kind(), ErrorKind::internal);
    auto unauthorized = api_error(401, R"({"error": "no bearer token", "kind": "permission"})");
    EXPECT_EQ(exit_code_for(unauthorized.kind()), exit_permission);
    EXPECT_NE(unauthorized.message().find("VMSHADOW_TOKEN"), std::string::npos);
    // A hostile body cannot put an escape sequence on the user's terminal.
    EXPECT_EQ(
        api_error(400, "{\"error\": \"a\\u001b[2Jb\", \"kind\": \"x\"}").message().find('\x1b'),
        std::string::npos);
}

TEST(DaemonClient, SaysHowToStartADaemonThatIsNotRunning) {
    std::string tmpl = (fs::temp_directory_path() / "vmshadow-cli-nodaemon-XXXXXX").string();
    fs::path dir = ::mkdtemp(tmpl.data());
    DaemonConnection c;
    c.url = "unix:" + (dir / "api.sock").string();
    auto missing = daemon_call(c, "GET", "/vms");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::unavailable);
    EXPECT_EQ(missing.error().message(),
              "vmshadowd is not running (no socket at " + (dir / "api.sock").string() +
                  "): start it with `vmshadowd` or `systemctl start vmshadowd`");

    // A socket file left by a daemon that died: nobody listens on it.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, (dir / "api.sock").c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
    auto stale = daemon_call(c, "GET", "/vms");
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error().kind(), ErrorKind::unavailable);
    EXPECT_NE(stale.error().message().find("vmshadowd is not running (nothing answers on"),
              std::string::npos)
        << stale.error().message();

    std::string err;
    EXPECT_EQ(run(c.url, {"status"}, nullptr, &err), exit_unavailable);
    EXPECT_NE(err.find("vmshadowd is not running"), std::string::npos) << err;
    std::string out;
    EXPECT_EQ(run(c.url, {"task", "list", "--json"}, &out), exit_unavailable);
    EXPECT_EQ(json::parse(out)["kind"], "unavailable") << out;
    fs::remove_all(dir);
}

// A user the root-only socket does not let in is told so (exit 11), not that the daemon is not
// running. Root opens any socket, so the check runs in a child that drops to nobody.
TEST(DaemonClient, AUserTheSocketRefusesIsToldPermissionNotNotRunning) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to drop to another user";
    FakeDaemon daemon([](const net::HttpRequest&) { return answer(200, json::array()); });
    ::chmod(daemon.dir().c_str(), 0755);  // the socket's own mode (0600) is what refuses
    const std::string url = daemon.url();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(100);
        DaemonConnection c;
        c.url = url;
        auto r = daemon_call(c, "GET", "/vms");
        if (r) ::_exit(101);
        if (r.error().message().find("permission denied (the socket is root's") ==
            std::string::npos)
            ::_exit(102);
        ::_exit(exit_code_for(r.error().kind()));
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), exit_permission);
    EXPECT_TRUE(daemon.requests().empty());
}

TEST(DaemonClient, DaemonUrlsAreUnixOrHttps) {
    auto check = [](std::string url, std::string fingerprint = "") {
        DaemonConnection c;
        c.url = std::move(url);
        c.fingerprint = std::move(fingerprint);
        return check_daemon_connection(c);
    };
    EXPECT_TRUE(check("unix:/var/lib/vmshadow/api.sock"));
    EXPECT_TRUE(check("https://127.0.0.1:8470"));
    EXPECT_TRUE(check("https://[::1]:8470", "AB:CD"));
    for (const char* bad :
         {"http://127.0.0.1:8470", "ftp://x", "", "/var/lib/vmshadow/api.sock", "https://"}) {
        auto c = check(bad);
        ASSERT_FALSE(c) << bad;
        EXPECT_EQ(c.error().kind(), ErrorKind::invalid_argument) << bad;
        EXPECT_TRUE(c.error().message().starts_with("--daemon: ")) << c.error().message();
    }
    auto pinned_socket = check("unix:/x.sock", "AB:CD");
    ASSERT_FALSE(pinned_socket);
    EXPECT_TRUE(pinned_socket.error().message().starts_with("--fingerprint: "));
    std::string err;
    EXPECT_EQ(run("http://127.0.0.1:1", {"status"}, nullptr, &err), exit_usage);
    EXPECT_NE(err.find("plain HTTP"), std::string::npos) << err;
}

TEST(DaemonClient, QueriesArePercentEncoded) {
    EXPECT_EQ(with_query("/tasks", {{"state", "failed"}, {"job", ""}, {"limit", "5"}}),
              "/tasks?state=failed&limit=5");
    EXPECT_EQ(with_query("/jobs/x", {{"digest", "a b&c=d"}}), "/jobs/x?digest=a%20b%26c%3Dd");
}

// A task whose log grows over three polls and then ends.
struct GrowingLog {
    std::mutex mutex;
    int polls = 0;
    net::HttpResponse page(const net::HttpRequest& r) {
        std::lock_guard lock(mutex);
        std::int64_t start = std::stoll(r.query.at("start"));
        ++polls;
        auto line = [](int n) {
            return json{{"n", n},
                        {"time", "2026-12-07T05:30:0" + std::to_string(n) + "Z"},
                        {"level", "info"},
                        {"text", "line " + std::to_string(n)}};
        };
        json lines = json::array();
        if (start == 1) lines = {line(1), line(2)};
        if (start == 3 && polls >= 4) lines = {line(3)};
        std::int64_t next = start + static_cast<std::int64_t>(lines.size());
        bool done = polls >= 5;
        return answer(
            200, {{"task", 5}, {"start", start}, {"lines", lines}, {"next", next}, {"done", done}});
    }
};

TEST(DaemonClient, FollowingALogPrintsEveryLineOnceUntilTheTaskEnds) {
    GrowingLog log;
    FakeDaemon daemon([&](const net::HttpRequest& r) { return log.page(r); });
    std::vector<std::string> printed;
    CancelToken cancel;
    auto st = follow_task_log(
        daemon.connection(), 5, 1, true, cancel,
        [&](const json& line) { printed.push_back(line["text"].get<std::string>()); }, 10ms);
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(printed, (std::vector<std::string>{"line 1", "line 2", "line 3"}));
    for (const auto& r : daemon.requests()) EXPECT_EQ(r.method, "GET") << r.target;
}

TEST(DaemonClient, CtrlCStopsFollowingWithoutAbortingTheTask) {
    FakeDaemon daemon([](const net::HttpRequest&) {
        return answer(200, {{"lines", json::array()}, {"next", 1}, {"done", false}});
    });
    CancelToken cancel;
    std::jthread interrupt([cancel]() mutable {
        std::this_thread::sleep_for(200ms);
        cancel.request();
    });
    auto started = std::chrono::steady_clock::now();
    auto st = follow_task_log(daemon.connection(), 9, 1, true, cancel, [](const json&) {});
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::cancelled);
    EXPECT_NE(st.error().message().find("it goes on"), std::string::npos);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
    for (const auto& r : daemon.requests()) EXPECT_EQ(r.method, "GET");
}

TEST(DaemonClient, FinishedTasksMapToTheirErrorKind) {
    EXPECT_FALSE(task_failure(json{{"id", 1}, {"state", "ok"}}));
    EXPECT_FALSE(task_failure(json{{"id", 1}, {"state", "running"}}));
    auto failed = task_failure(
        json{{"id", 1}, {"state", "failed"}, {"error", "no agent"}, {"error_kind", "timeout"}});
    ASSERT_TRUE(failed);
    EXPECT_EQ(failed->kind(), ErrorKind::timeout);
    EXPECT_EQ(failed->message(), "task 1 failed: no agent");
    EXPECT_EQ(task_failure(json{{"id", 2}, {"state", "interrupted"}})->kind(),
              ErrorKind::cancelled);
    EXPECT_EQ(task_failure(json{{"id", "x"}, {"state", "failed"}})->kind(), ErrorKind::internal);
}

// The daemon side of the command tests: jobs with a digest, a run whose task fails.
net::HttpResponse fake_api(const net::HttpRequest& r) {
    if (r.path == "/api/v1/vms")
        return answer(200, json::array({{{"name", "web"},
                                         {"state", "running"},
                                         {"method", "application"},
                                         {"last_backup", "2026-12-07T02:00:00Z"},
                                         {"age_s", 11520},
                                         {"consistency", "application"},
                                         {"next_run", "2026-12-07T22:00:00Z"},
                                         {"protection", "protected"}}}));
    if (r.path == "/api/v1/jobs" && r.method == "GET")
        return answer(200, {{"digest", "d1"},
                            {"jobs",
                             {{{"id", "nightly"},
                               {"kind", "backup"},
                               {"schedule", "daily"},
                               {"repository", "main"},
                               {"vms", {"web"}},
                               {"keep_daily", 7},
                               {"next_run", nullptr},
                               {"last_task", 4},
                               {"last_success", nullptr}}}}});
    if (r.path == "/api/v1/jobs" && r.method == "POST")
        return answer(200, {{"digest", "d2"}, {"job", json::parse(r.body)["job"]}});
    if (r.path == "/api/v1/jobs/nightly" && r.method == "PUT")
        return answer(200, {{"digest", "d2"}, {"job", json::parse(r.body)["job"]}});
    if (r.path == "/api/v1/jobs/nightly" && r.method == "DELETE")
        return answer(200, {{"digest", "d2"}});
    if (r.path == "/api/v1/jobs/nightly/run") return answer(202, {{"task", 5}});
    if (r.path == "/api/v1/tasks/5/log")
        return answer(200, {{"lines", r.query.at("start") == "1"
                                          ? json::array({{{"n", 1},
                                                          {"time", "2026-12-07T05:30:00Z"},
                                                          {"level", "error"},
                                                          {"text", "agent timeout"}}})
                                          : json::array()},
                            {"next", 2},
                            {"done", true}});
    if (r.path == "/api/v1/tasks/5")
        return answer(200, {{"id", 5},
                            {"state", "failed"},
                            {"error", "agent timeout"},
                            {"error_kind", "timeout"}});
    if (r.path == "/api/v1/tokens" && r.method == "POST")
        return answer(200, {{"name", "ci"}, {"role", "operator"}, {"token", "ci:0123abcd"}});
    return answer(404, {{"error", "no route " + r.path}, {"kind", "not_found"}});
}

TEST(DaemonClientCommands, StatusPrintsTheTableOrTheApisJson) {
    FakeDaemon daemon(fake_api);
    std::string out;
    ASSERT_EQ(run(daemon.url(), {"status"}, &out), exit_ok) << out;
    EXPECT_TRUE(out.starts_with("NAME")) << out;
    EXPECT_NE(out.find("3 h 12 min"), std::string::npos) << out;
    ASSERT_EQ(run(daemon.url(), {"status", "--json"}, &out), exit_ok);
    EXPECT_EQ(json::parse(out)[0]["age_s"], 11520);
}

TEST(DaemonClientCommands, JobAddSendsTheDigestAndOnlyTheGivenFields) {
    FakeDaemon daemon(fake_api);
    std::string out, err;
    ASSERT_EQ(run(daemon.url(),
                  {"job", "add", "weekly", "--kind", "backup", "--vm", "web*", "--vm", "db1",
                   "--repository", "main", "--schedule", "Sun 03:00", "--keep-weekly", "4",
                   "--no-group", "--disabled"},
                  &out, &err),
              exit_ok)
        << err;
    auto requests = daemon.requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[0].method, "GET");
    EXPECT_EQ(requests[1].method, "POST");
    EXPECT_EQ(json::parse(requests[1].body), json::parse(R"({"digest": "d1", "job": {
        "id": "weekly", "kind": "backup", "vms": ["web*", "db1"], "repository": "main",
        "schedule": "Sun 03:00", "keep_weekly": 4, "group": false, "enabled": false}})"));
    EXPECT_EQ(out, "added job weekly\n");
}

TEST(DaemonClientCommands, JobEditChangesOnlyTheGivenFields) {
    FakeDaemon daemon(fake_api);
    std::string err;
    ASSERT_EQ(run(daemon.url(), {"job", "edit", "nightly", "--schedule", "hourly"}, nullptr, &err),
              exit_ok)
        << err;
    auto requests = daemon.requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[1].method, "PUT");
    EXPECT_EQ(json::parse(requests[1].body), json::parse(R"({"digest": "d1", "job": {
        "id": "nightly", "kind": "backup", "schedule": "hourly", "repository": "main",
        "vms": ["web"], "keep_daily": 7}})"));
    EXPECT_EQ(run(daemon.url(), {"job", "edit", "nope", "--schedule", "daily"}, nullptr, &err),
              exit_not_found);
    // Nothing to change is a usage error, before any request.
    const auto before = daemon.requests().size();
    EXPECT_EQ(run(daemon.url(), {"job", "edit", "nightly"}, nullptr, &err), exit_usage);
    EXPECT_NE(err.find("nothing to change"), std::string::npos) << err;
    EXPECT_EQ(daemon.requests().size(), before);
}

TEST(DaemonClientCommands, JobRemoveCarriesTheDigest) {
    FakeDaemon daemon(fake_api);
    ASSERT_EQ(run(daemon.url(), {"job", "remove", "nightly"}), exit_ok);
    auto requests = daemon.requests();
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_EQ(requests[1].method, "DELETE");
    EXPECT_EQ(requests[1].query.at("digest"), "d1");
}

TEST(DaemonClientCommands, JobRunPrintsTheTaskAndWaitExitsWithItsErrorKind) {
    FakeDaemon daemon(fake_api);
    std::string out, err;
    ASSERT_EQ(run(daemon.url(), {"job", "run", "nightly"}, &out), exit_ok);
    EXPECT_EQ(out, "5\n");
    EXPECT_EQ(run(daemon.url(), {"job", "run", "nightly", "--wait"}, &out, &err), exit_timeout);
    EXPECT_EQ(out, "5\n2026-12-07 05:30 error   agent timeout\n");
    EXPECT_EQ(err, "vmshadow: task 5 failed: agent timeout\n");
}

TEST(DaemonClientCommands, TaskLogPrintsTimeLevelText) {
    FakeDaemon daemon(fake_api);
    std::string out;
    ASSERT_EQ(run(daemon.url(), {"task", "log", "5", "-f"}, &out), exit_ok);
    EXPECT_EQ(out, "2026-12-07 05:30 error   agent timeout\n");
    EXPECT_EQ(run(daemon.url(), {"task", "show", "6"}, &out), exit_not_found);
}

TEST(DaemonClientCommands, TokenCreateShowsTheSecretOnce) {
    FakeDaemon daemon(fake_api);
    std::string out, err;
    ASSERT_EQ(run(daemon.url(), {"token", "create", "ci", "--role", "operator"}, &out, &err),
              exit_ok);
    EXPECT_EQ(out, "ci:0123abcd\n");
    EXPECT_NE(err.find("not shown again"), std::string::npos) << err;
    EXPECT_EQ(json::parse(daemon.requests()[0].body),
              json::parse(R"({"name": "ci", "role": "operator"})"));
    EXPECT_EQ(run(daemon.url(), {"token", "create", "ci", "--role", "root"}), exit_usage);
    EXPECT_EQ(run(daemon.url(), {"token", "create", "Bad/Name", "--role", "audit"}), exit_usage);
}

// Ctrl-C as the terminal sends it: `task log -f` stops following, exits 12 (cancelled) and
// says the task goes on; no abort (DELETE) reaches the daemon.
TEST(DaemonClientCommands, CtrlCStopsTaskLogFollowWithoutAbortingTheTask) {
    FakeDaemon daemon([](const net::HttpRequest&) {
        return answer(200, {{"lines", json::array()}, {"next", 1}, {"done", false}});
    });
    std::jthread interrupt([&daemon](std::stop_token stop) {
        // Only once the command polls: its Ctrl-C handler is in place by then.
        while (daemon.requests().empty() && !stop.stop_requested())
            std::this_thread::sleep_for(10ms);
        if (!stop.stop_requested()) ::kill(::getpid(), SIGINT);
    });
    std::string err;
    auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(run(daemon.url(), {"task", "log", "7", "-f"}, nullptr, &err), exit_cancelled);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
    EXPECT_NE(err.find("stopped following task 7: it goes on"), std::string::npos) << err;
    for (const auto& r : daemon.requests()) EXPECT_EQ(r.method, "GET") << r.target;
}

}  // namespace
}  // namespace vmshadow::cli
