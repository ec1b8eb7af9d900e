// SPDX-License-Identifier: MIT
// vmshadowd on real parts: the real daemon on loopback and a unix socket with its own state
// dir, a real lab guest, a real repository (issue 14's acceptance).
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>

#include "integration/daemon_fixture.h"
#include "net/http_server.h"
#include "net/tls_identity.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

std::string backup_job(const std::string& id, const std::string& vm, const std::string& schedule,
                       const std::string& extra = "") {
    return "[job." + id + "]\nkind = \"backup\"\nvms = [\"" + vm + "\"]\nrepository = \"main\"\n" +
           "schedule = \"" + schedule + "\"\n" + extra + "\n";
}

// The tasks of a job, oldest first.
json job_tasks(DaemonTest& t, const std::string& job) {
    json list = t.api_json("GET", "/tasks?job=" + job + "&limit=100")["tasks"];
    json out = json::array();
    // The list leaves results out: each task in full.
    for (auto it = list.rbegin(); it != list.rend(); ++it) {
        out.push_back(
            t.api_json("GET", "/tasks/" + std::to_string((*it)["id"].get<std::int64_t>())));
    }
    return out;
}

std::string disk_mode(const json& task, const std::string& disk) {
    for (const auto& vm : task["result"]["vms"])
        for (const auto& d : vm["disks"])
            if (d["disk"] == disk) return d["mode"];
    return "missing";
}

// A job "manual" backing `g` up, one good run of it, the guest's checkpoints after it, and
// the daemon stopped: where the kill and SIGTERM tests start from.
void first_good_backup_then_stop(DaemonTest& t, lab::LabGuest& g,
                                 std::vector<std::string>& checkpoints_after) {
    t.write_config(backup_job("manual", g.name(), ""));
    t.start_daemon();
    if (::testing::Test::HasFatalFailure()) return;
    json first = t.wait_task(t.run_job("manual"));
    ASSERT_EQ(first["state"], "ok") << first.dump(2) << t.read_log();
    checkpoints_after = DaemonTest::checkpoints(g);
    t.stop_daemon();
}

// What an ended run must not leave: a libvirt backup job on the guest, scratch files.
void expect_no_backup_job_or_scratch(DaemonTest& t, const lab::LabGuest& g) {
    auto job = lab::run_process({"virsh", "-c", lab::lab_uri(), "domjobinfo", g.name()});
    ASSERT_TRUE(job);
    EXPECT_NE(job->out.find("None"), std::string::npos) << job->out;
    EXPECT_TRUE(t.scratch_leftovers().empty());
}

TEST_F(DaemonTest, ScheduledJobBacksUpTwiceAndTheSecondIsIncremental) {
    lab::LabGuest& g = boot({});
    write_config(backup_job("every20s", g.name(), "*:*:0/20"));
    start_daemon();
    json tasks;
    for (auto end = std::chrono::steady_clock::now() + 300s; std::chrono::steady_clock::now() < end;
         std::this_thread::sleep_for(1s)) {
        tasks = job_tasks(*this, "every20s");
        int ok = 0;
        for (const auto& t : tasks) ok += t["state"] == "ok";
        for (const auto& t : tasks) ASSERT_NE(t["state"], "failed") << t.dump(2) << read_log();
        if (ok >= 2) break;
    }
    ASSERT_GE(tasks.size(), 2u) << read_log();
    EXPECT_EQ(tasks[0]["trigger"], "schedule");
    EXPECT_EQ(tasks[0]["state"], "ok") << tasks[0].dump(2);
    EXPECT_EQ(tasks[1]["state"], "ok") << tasks[1].dump(2);
    EXPECT_EQ(disk_mode(tasks[0], "vda"), "full");
    EXPECT_EQ(disk_mode(tasks[1], "vda"), "incremental") << tasks[1].dump(2);
    // The log tells the story, in pages.
    json log =
        api_json("GET", "/tasks/" + std::to_string(tasks[1]["id"].get<int>()) + "/log?start=1");
    ASSERT_FALSE(log["lines"].empty());
    EXPECT_TRUE(log["done"].get<bool>());
    // GET /vms shows the VM protected, with its last point.
    json vms = api_json("GET", "/vms", "", 200);
    bool seen = false;
    for (const auto& vm : vms) {
        if (vm["name"] != g.name()) continue;
        seen = true;
        EXPECT_EQ(vm["protection"], "protected") << vm.dump(2);
        EXPECT_FALSE(vm["last_point"].get<std::string>().empty());
        EXPECT_FALSE(vm["next_run"].is_null());
    }
    EXPECT_TRUE(seen) << vms.dump(2);
}

TEST_F(DaemonTest, TwoJobsOnOneVmNeverOverlapTheSecondWaitsQueued) {
    lab::LabGuest& g = boot({});
    write_config(backup_job("first", g.name(), "") +
                     backup_job("second", g.name(), "", "method = \"crash\""),
                 "max-concurrent-backups = 4\n");
    start_daemon();
    std::int64_t a = run_job("first");
    std::int64_t b = run_job("second");
    json second = api_json("GET", "/tasks/" + std::to_string(b));
    EXPECT_EQ(second["state"], "queued") << second.dump(2);
    json ta = wait_task(a);
    json tb = wait_task(b);
    ASSERT_EQ(ta["state"], "ok") << ta.dump(2) << read_log();
    ASSERT_EQ(tb["state"], "ok") << tb.dump(2) << read_log();
    EXPECT_LE(ta["ended_at"].get<std::int64_t>(), tb["started_at"].get<std::int64_t>());
}

TEST_F(DaemonTest, HttpsRefusesMissingAndWeakTokensAndAcceptsTheRightRole) {
    write_config(backup_job("nightly", "no-such-vm-" + current_test_name(), "daily"));
    start_daemon();
    // No token, a wrong token: 401.
    EXPECT_EQ(https("GET", "/jobs").status, 401);
    EXPECT_EQ(https("GET", "/jobs", "nobody:00").status, 401);
    // Health needs none.
    EXPECT_EQ(https("GET", "/health").status, 200);
    json audit = api_json("POST", "/tokens", R"({"name":"watcher","role":"audit"})");
    json oper = api_json("POST", "/tokens", R"({"name":"ops","role":"operator"})");
    ASSERT_TRUE(audit.contains("token")) << audit.dump();
    std::string audit_token = audit["token"], ops_token = oper["token"];
    EXPECT_EQ(https("GET", "/jobs", audit_token).status, 200);
    // audit may not run a job, nor an operator edit one: 403.
    EXPECT_EQ(https("POST", "/jobs/nightly/run", audit_token).status, 403);
    EXPECT_EQ(https("DELETE", "/jobs/nightly?digest=x", ops_token).status, 403);
    EXPECT_EQ(https("POST", "/jobs/nightly/run", ops_token).status, 202);
    // A revoked token is refused.
    api_json("DELETE", "/tokens/ops", "", 200);
    EXPECT_EQ(https("GET", "/jobs", ops_token).status, 401);
    // Each refusal is logged, without the secret.
    std::string log = read_log();
    EXPECT_NE(log.find("401"), std::string::npos) << log;
    EXPECT_NE(log.find("403"), std::string::npos) << log;
    EXPECT_EQ(log.find(ops_token.substr(ops_token.find(':') + 1)), std::string::npos);
}

TEST_F(DaemonTest, JobEditWithAStaleDigestGets409AndChangesNothing) {
    write_config(backup_job("nightly", "vm-" + current_test_name(), "daily"));
    start_daemon();
    json jobs = api_json("GET", "/jobs", "", 200);
    std::string digest = jobs["digest"];
    json job = jobs["jobs"][0];
    job.erase("next_run");
    job.erase("last_task");
    job.erase("last_success");
    job["schedule"] = "hourly";
    json body{{"digest", digest}, {"job", job}};
    api_json("PUT", "/jobs/nightly", body.dump(), 200);
    std::string before = [&] {
        std::ifstream in(config_file);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }();
    job["schedule"] = "weekly";
    body["job"] = job;  // still the old digest
    json refused = api_json("PUT", "/jobs/nightly", body.dump(), 409);
    EXPECT_EQ(refused["kind"], "conflict") << refused.dump();
    std::ifstream in(config_file);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), before);
    EXPECT_EQ(api_json("GET", "/jobs")["jobs"][0]["schedule"], "hourly");
}

TEST_F(DaemonTest, KilledMidBackupTheTaskIsInterruptedAndTheNextRunCleansUpAndIsIncremental) {
    lab::LabGuest& g = boot({});
    std::vector<std::string> checkpoints_before;
    first_good_backup_then_stop(*this, g, checkpoints_before);
    if (HasFatalFailure()) return;

    // The daemon dies (SIGKILL, from inside) as the copy starts: a backup job, its scratch
    // and a new checkpoint are left behind.
    start_daemon({"VMSHADOW_TEST_KILL_AT=backup-copy"});
    auto killed = api_json("POST", "/jobs/manual/run", "", 202)["task"].get<std::int64_t>();
    ASSERT_TRUE(wait_exit(120s)) << "the kill point was not reached:\n" << read_log();

    start_daemon();
    json t = api_json("GET", "/tasks/" + std::to_string(killed));
    EXPECT_EQ(t["state"], "interrupted") << t.dump(2);
    json next = wait_task(run_job("manual"));
    ASSERT_EQ(next["state"], "ok") << next.dump(2) << read_log();
    EXPECT_EQ(disk_mode(next, "vda"), "incremental") << next.dump(2);
    // Nothing of the killed run is left: no backup job, no scratch, one checkpoint.
    expect_no_backup_job_or_scratch(*this, g);
    EXPECT_EQ(checkpoints(g).size(), checkpoints_before.size());
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(DaemonTest, SigtermCancelsTheRunningBackupCleanlyAndTheNextOneIsIncremental) {
    lab::LabGuest& g = boot({});
    std::vector<std::string> checkpoints_before;
    first_good_backup_then_stop(*this, g, checkpoints_before);
    if (HasFatalFailure()) return;

    // The backup holds at its commit (snapshot taken, data copied) when SIGTERM arrives.
    start_daemon({"VMSHADOW_TEST_PAUSE_AT=backup-commit", "VMSHADOW_TEST_PAUSE_MS=4000"});
    auto id = run_job("manual");
    bool paused = false;
    for (auto end = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < end;
         std::this_thread::sleep_for(100ms)) {
        if (read_log().find("paused at backup-commit") != std::string::npos) {
            paused = true;
            break;
        }
    }
    ASSERT_TRUE(paused) << read_log();
    ::kill(pid, SIGTERM);
    ASSERT_TRUE(wait_exit(120s)) << "vmshadowd did not stop:\n" << read_log();
    std::string log = read_log();
    EXPECT_NE(log.find("vmshadowd stopped"), std::string::npos) << log;

    start_daemon();
    json t = api_json("GET", "/tasks/" + std::to_string(id));
    EXPECT_EQ(t["state"], "cancelled") << t.dump(2);
    // Nothing of the cancelled run is left, the guest is thawed and running.
    EXPECT_EQ(freeze_status(g), "thawed");
    expect_no_backup_job_or_scratch(*this, g);
    EXPECT_EQ(checkpoints(g), checkpoints_before);
    json next = wait_task(run_job("manual"));
    ASSERT_EQ(next["state"], "ok") << next.dump(2) << read_log();
    EXPECT_EQ(disk_mode(next, "vda"), "incremental") << next.dump(2);
}

TEST_F(DaemonTest, SighupReloadsTheConfigAndABadOneIsLoggedAndNotTaken) {
    write_config(backup_job("nightly", "vm-" + current_test_name(), "daily"));
    start_daemon();
    write_config(backup_job("nightly", "vm-" + current_test_name(), "hourly"));
    ::kill(pid, SIGHUP);
    std::string schedule;
    for (int i = 0; i < 50 && schedule != "hourly"; ++i) {
        std::this_thread::sleep_for(100ms);
        schedule = api_json("GET", "/jobs")["jobs"][0]["schedule"];
    }
    EXPECT_EQ(schedule, "hourly");
    {
        std::ofstream out(config_file, std::ios::app);
        out << "[job.broken]\nkind = \"backup\"\nschedule = \"every tuesday\"\n";
    }
    ::kill(pid, SIGHUP);
    std::this_thread::sleep_for(1s);
    json jobs = api_json("GET", "/jobs");
    EXPECT_EQ(jobs["jobs"].size(), 1u) << jobs.dump(2);
    std::string log = read_log();
    EXPECT_NE(log.find("kept the old config"), std::string::npos) << log;
    EXPECT_NE(log.find("vmshadowd.toml"), std::string::npos) << log;
}

TEST_F(DaemonTest, AJobAfterAnotherRunsWhenItSucceeds) {
    lab::LabGuest& g = boot({});
    write_config(backup_job("nightly", g.name(), "") +
                 "[job.check]\nkind = \"check\"\nrepository = \"main\"\nafter = \"nightly\"\n"
                 "read-data-percent = 50\n");
    start_daemon();
    json backup = wait_task(run_job("nightly"));
    ASSERT_EQ(backup["state"], "ok") << backup.dump(2) << read_log();
    json chained;
    for (auto end = std::chrono::steady_clock::now() + 60s; std::chrono::steady_clock::now() < end;
         std::this_thread::sleep_for(500ms)) {
        json list = api_json("GET", "/tasks?job=check")["tasks"];
        if (!list.empty()) {
            chained = wait_task(list[0]["id"].get<std::int64_t>());
            break;
        }
    }
    ASSERT_FALSE(chained.is_null()) << read_log();
    EXPECT_EQ(chained["trigger"], "after:nightly");
    EXPECT_EQ(chained["state"], "ok") << chained.dump(2);
    EXPECT_EQ(chained["result"]["read_data_percent"], 50);
    EXPECT_GE(chained["started_at"].get<std::int64_t>(), backup["ended_at"].get<std::int64_t>());
}

// A webhook receiver on 127.0.0.1: records each POST body.
struct WebhookListener {
    std::mutex mutex;
    std::vector<std::string> bodies;
    std::unique_ptr<net::HttpServer> server;
    fs::path dir;
    std::uint16_t port = 0;

    explicit WebhookListener(const fs::path& d) : dir(d) {
        auto id = net::ensure_tls_identity(dir);
        if (!id) throw std::runtime_error(id.error().message());
        net::HttpServerOptions o;
        o.tls.push_back({"127.0.0.1", 0, id->certificate_file, id->key_file, std::nullopt});
        o.threads = 1;
        auto s = net::HttpServer::start(o, [this](const net::HttpRequest& r) {
            std::lock_guard lock(mutex);
            bodies.push_back(r.body);
            return net::HttpResponse{200, "application/json", "{}", {}};
        });
        if (!s) throw std::runtime_error(s.error().message());
        server = std::move(*s);
        port = server->tls_port();
    }
    std::string fingerprint() const {
        auto f = net::certificate_fingerprint(dir / "api.crt");
        return f ? *f : "";
    }
};

TEST_F(DaemonTest, AFailingJobIsReportedToTheWebhookWithin30Seconds) {
    fs::create_directories(dir / "hook");
    WebhookListener hook(dir / "hook");
    std::string alerts = "\n[alerts]\nwebhook = \"https://127.0.0.1:" + std::to_string(hook.port) +
                         "/hook\"\nwebhook-sha256 = \"" + hook.fingerprint() + "\"\n";
    write_config(backup_job("broken", "no-such-vm-" + current_test_name(), "") + alerts);
    start_daemon();
    auto id = run_job("broken");
    json t = wait_task(id, 60s);
    EXPECT_EQ(t["state"], "failed") << t.dump(2);
    std::string body;
    for (auto end = std::chrono::steady_clock::now() + 30s; std::chrono::steady_clock::now() < end;
         std::this_thread::sleep_for(200ms)) {
        std::lock_guard lock(hook.mutex);
        if (!hook.bodies.empty()) {
            body = hook.bodies.front();
            break;
        }
    }
    ASSERT_FALSE(body.empty()) << read_log();
    json alert = json::parse(body, nullptr, false);
    EXPECT_EQ(alert["event"], "task_failed") << body;
    EXPECT_EQ(alert["job"], "broken") << body;
    EXPECT_EQ(alert["task"], id) << body;
}

// ---- the dashboard's side (issue 15) ---------------------------------------------------------

// A browser over HTTPS: the session cookie once signed in, and its CSRF value on changes.
struct Browser {
    DaemonTest& t;
    std::string cookie, csrf;

    net::HttpResponse send(const std::string& method, const std::string& target,
                           const std::string& body = "", bool with_csrf = true) {
        net::HttpEndpoint e;
        e.scheme = net::HttpEndpoint::Scheme::https;
        e.host = "127.0.0.1";
        e.port = t.https_port;
        e.insecure = true;
        net::HttpClientRequest r;
        r.method = method;
        r.target = target;
        r.body = body;
        if (!cookie.empty()) r.headers.push_back({"Cookie", "vmshadow_session=" + cookie});
        if (with_csrf && !csrf.empty()) r.headers.push_back({"X-CSRF-Token", csrf});
        auto response = net::http_request(e, r);
        if (!response)
            throw std::runtime_error(method + " " + target + ": " + response.error().message());
        return *response;
    }
    static std::string header(const net::HttpResponse& r, const std::string& name) {
        for (const auto& [k, v] : r.headers)
            if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
        return "";
    }
    bool sign_in(const std::string& token) {
        auto r = send("POST", "/api/v1/session", json{{"token", token}}.dump());
        if (r.status != 200) return false;
        std::string set = header(r, "Set-Cookie");
        cookie = set.substr(set.find('=') + 1, 64);
        csrf = json::parse(r.body)["csrf"];
        return true;
    }
};

TEST_F(DaemonTest, DashboardSessionBacksUpAVmNowAndForgetsItsPoint) {
    lab::LabGuest& g = boot({});
    write_config("");
    start_daemon();
    json oper = api_json("POST", "/tokens", R"({"name":"ops","role":"operator"})");
    Browser browser{*this, "", ""};
    EXPECT_FALSE(browser.sign_in("ops:" + std::string(64, '0')));
    ASSERT_TRUE(browser.sign_in(oper["token"])) << read_log();
    EXPECT_EQ(browser.send("GET", "/api/v1/session").status, 200);

    // A change without the CSRF value is refused; with it, the backup starts.
    const std::string backup = json{{"vm", g.name()}, {"method", "crash"}}.dump();
    EXPECT_EQ(browser.send("POST", "/api/v1/backup", backup, false).status, 403);
    auto started = browser.send("POST", "/api/v1/backup", backup);
    ASSERT_EQ(started.status, 202) << started.body;
    json task = wait_task(json::parse(started.body)["task"].get<std::int64_t>());
    ASSERT_EQ(task["state"], "ok") << task.dump(2) << read_log();
    EXPECT_EQ(task["kind"], "backup");
    EXPECT_EQ(task["job"], "");

    // The point, with what the VM page shows; the VM's last backup is recorded.
    json points = api_json("GET", "/points?vm=" + g.name(), "", 200)["points"];
    ASSERT_EQ(points.size(), 1u) << points.dump(2);
    EXPECT_EQ(points[0]["consistency"], "crash");
    EXPECT_TRUE(points[0]["freeze_ms"].is_null()) << points[0].dump(2);
    EXPECT_TRUE(points[0]["verified"].is_null());
    EXPECT_TRUE(points[0]["duration_s"].is_number()) << points[0].dump(2);
    for (const auto& vm : api_json("GET", "/vms", "", 200))
        if (vm["name"] == g.name()) {
            EXPECT_EQ(vm["last_point"], points[0]["id"]) << vm.dump(2);
        }

    // The previews answer what the pages show.
    json schedule = api_json("GET", "/schedule/preview?expr=Mon..Fri%2022:00", "", 200);
    EXPECT_EQ(schedule["normalized"], "Mon..Fri *-*-* 22:00:00");
    EXPECT_EQ(schedule["next"].size(), 5u);
    auto preview = browser.send("POST", "/api/v1/repos/main/prune-preview",
                                R"({"keep_last": 1, "keep_yearly": 1})");
    ASSERT_EQ(preview.status, 200) << preview.body;
    json decided = json::parse(preview.body)["points"];
    ASSERT_EQ(decided.size(), 1u);
    EXPECT_EQ(decided[0]["keep"], true);

    // Forget it; then sign out, and the cookie is worth nothing.
    auto forgotten = browser.send("DELETE", "/api/v1/points/" + g.name() + "@latest");
    ASSERT_EQ(forgotten.status, 200) << forgotten.body;
    EXPECT_EQ(json::parse(forgotten.body)["forgotten"], points[0]["id"]);
    EXPECT_TRUE(api_json("GET", "/points?vm=" + g.name(), "", 200)["points"].empty());
    EXPECT_EQ(browser.send("DELETE", "/api/v1/session").status, 200);
    EXPECT_EQ(browser.send("GET", "/api/v1/session").status, 401);
    EXPECT_EQ(browser.send("GET", "/api/v1/vms").status, 401);

    // `/` is the dashboard (or says it is not built), with its security headers.
    auto root = browser.send("GET", "/");
    EXPECT_TRUE(root.status == 200 || root.body.find("not built") != std::string::npos)
        << root.status << " " << root.body;
    EXPECT_NE(Browser::header(root, "Content-Security-Policy").find("default-src 'self'"),
              std::string::npos);
}

}  // namespace
}  // namespace vmshadow::testing
