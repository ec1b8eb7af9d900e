// SPDX-License-Identifier: MIT
// `vmshadow replica ...` against a fake vmshadowd: the requests each command sends, what it
// prints, the arguments refused before any request (exit 2), and the confirmations failover
// and commit need.
#include <gtest/gtest.h>

#include "cli/exit_code.h"
#include "cli/replica_views.h"
#include "unit/cli/fake_daemon.h"

namespace vmshadow::cli {
namespace {

json replica_list() {
    return json::parse(R"({"replicas": [
      {"vm": "web1", "uuid": "u1", "role": "primary", "peer": "hostb:8471", "state": "normal",
       "reason": "", "interval_s": 300, "last_cycle": "2026-12-07T05:30:00Z", "rpo_s": 212,
       "avg_cycle_s": 4.25, "max_cycle_s": 19, "bytes_sent": 3221225472, "missed_cycles": 2,
       "points": 5, "last_error": null},
      {"vm": "db1", "role": "replica", "peer": "CN=hosta", "state": "warning",
       "reason": "30 % of the last hour's cycles were missed", "last_cycle": null,
       "rpo_s": null, "bytes_sent": 0, "missed_cycles": 0}]})");
}

net::HttpResponse fake_replica_api(const net::HttpRequest& r) {
    if (r.path == "/api/v1/replicas" && r.method == "GET") return answer(200, replica_list());
    if (r.path == "/api/v1/replicas" && r.method == "POST")
        return answer(200, {{"vm", json::parse(r.body)["vm"]}, {"state", "initial"}});
    if (r.path == "/api/v1/replicas/db1/points")
        return answer(200, json::parse(R"({"vm": "db1", "points": [
            {"seq": 0, "token": "vmshadow-1a2b3c4d-20261207T050000", "time":
             "2026-12-07T05:00:00Z", "consistency": "crash"},
            {"seq": 4, "token": "vmshadow-1a2b3c4d-20261207T052500", "time":
             "2026-12-07T05:25:00Z", "consistency": "application"}]})"));
    if (r.path.starts_with("/api/v1/replicas/") && r.method == "POST") {
        const std::string action = r.path.substr(r.path.rfind('/') + 1);
        for (const char* quick : {"pause", "resume", "remove", "stop-test", "commit"})
            if (action == quick) return answer(200, {{"ok", true}});
        return answer(202, {{"task", 5}});
    }
    if (r.path == "/api/v1/tasks/5/log")
        return answer(200, {{"lines", r.query.at("start") == "1"
                                          ? json::array({{{"n", 1},
                                                          {"time", "2026-12-07T05:30:00Z"},
                                                          {"level", "info"},
                                                          {"text", "cycle 7 committed"}}})
                                          : json::array()},
                            {"next", 2},
                            {"done", true}});
    if (r.path == "/api/v1/tasks/5") return answer(200, {{"id", 5}, {"state", "ok"}});
    return answer(404, {{"error", "no route " + r.path}, {"kind", "not_found"}});
}

TEST(ReplicaCommand, EnableSendsTheCheckedOptionsAsTheApiNamesThem) {
    FakeDaemon daemon(fake_replica_api);
    std::string out, err;
    ASSERT_EQ(run(daemon.url(),
                  {"replica", "enable", "web1", "--to", "hostb.example:8471", "--interval", "30s",
                   "--history", "24", "--app-consistent-every", "4", "--exclude-disk", "vdb",
                   "--exclude-disk", "vdc", "--bandwidth", "100", "--start-at", "22:00"},
                  &out, &err),
              exit_ok)
        << err;
    auto requests = daemon.requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].method, "POST");
    EXPECT_EQ(requests[0].path, "/api/v1/replicas");
    EXPECT_EQ(json::parse(requests[0].body), json::parse(R"({"vm": "web1",
        "to": "hostb.example:8471", "interval_s": 30, "history": 24,
        "app_consistent_every_h": 4, "exclude_disks": ["vdb", "vdc"], "bandwidth_mib": 100,
        "start_at": "22:00", "initial": "network"})"));
    EXPECT_NE(out.find("replicating web1 to hostb.example:8471 every 30s"), std::string::npos)
        << out;

    // A seed implies --initial repository; only the options given are sent.
    ASSERT_EQ(run(daemon.url(),
                  {"replica", "enable", "web1", "--to", "b:1", "--interval", "15m",
                   "--seed-repository", "/srv/repo", "--seed-point", "web1@latest"},
                  &out, &err),
              exit_ok)
        << err;
    EXPECT_EQ(json::parse(daemon.requests().back().body), json::parse(R"({"vm": "web1",
        "to": "b:1", "interval_s": 900, "initial": "repository",
        "seed_repository": "/srv/repo", "seed_point": "web1@latest"})"));
}

TEST(ReplicaCommand, BadArgumentsExitTwoBeforeAnyRequest) {
    FakeDaemon daemon(fake_replica_api);
    const std::vector<std::string> base = {"replica", "enable", "web1", "--to", "b:8471"};
    struct Case {
        std::vector<std::string> extra;
        std::string says;
    };
    const std::vector<Case> cases{
        {{"--interval", "5min"}, "--interval: must be 30s, 5m or 15m"},
        {{"--interval", "300"}, "--interval: must be 30s, 5m or 15m"},
        {{"--interval", "1h"}, "--interval: must be 30s, 5m or 15m"},
        {{}, "--interval is required"},
        {{"--interval", "5m", "--history", "25"}, "--history: must be a whole number from 0 to 24"},
        {{"--interval", "5m", "--app-consistent-every", "-1"}, "--app-consistent-every: must be"},
        {{"--interval", "5m", "--bandwidth", "100001"}, "--bandwidth: must be a whole number"},
        {{"--interval", "5m", "--start-at", "tomorrow"}, "--start-at: must be a UTC time"},
        {{"--interval", "5m", "--initial", "usb"}, "--initial"},
        {{"--interval", "5m", "--initial", "repository"}, "needs --seed-repository"},
        {{"--interval", "5m", "--initial", "offline", "--seed-repository", "/r", "--seed-point",
          "p"},
         "go with --initial repository"},
        {{"--interval", "5m", "--seed-repository", "relative/repo", "--seed-point", "p"},
         "--seed-repository: must be an absolute path"},
    };
    for (const auto& c : cases) {
        auto args = base;
        args.insert(args.end(), c.extra.begin(), c.extra.end());
        std::string err;
        EXPECT_EQ(run(daemon.url(), args, nullptr, &err), exit_usage) << c.says;
        EXPECT_NE(err.find(c.says), std::string::npos) << "want '" << c.says << "': " << err;
        EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    }
    std::string err;
    for (const char* to : {"hostb", "hostb:0", "hostb:65536", ":8471", "https://b:1", "b:1x"}) {
        EXPECT_EQ(run(daemon.url(), {"replica", "enable", "web1", "--to", to, "--interval", "5m"},
                      nullptr, &err),
                  exit_usage)
            << to;
        EXPECT_NE(err.find("--to: must be HOST:PORT"), std::string::npos) << err;
    }
    EXPECT_EQ(run(daemon.url(), {"replica", "pause", "we\nb1"}, nullptr, &err), exit_usage);
    EXPECT_EQ(run(daemon.url(), {"replica", "failover", "web1", "--point", "-1"}, nullptr, &err),
              exit_usage);
    EXPECT_EQ(run(daemon.url(), {"replica", "explode", "web1"}, nullptr, &err), exit_usage);
    EXPECT_EQ(run(daemon.url(), {"replica", "pause", "web1", "--wait"}, nullptr, &err), exit_usage);
    EXPECT_TRUE(daemon.requests().empty());
}

TEST(ReplicaCommand, FailoverAndCommitNeedYes) {
    FakeDaemon daemon(fake_replica_api);
    std::string out, err;
    EXPECT_EQ(run(daemon.url(), {"replica", "failover", "web1"}, &out, &err), exit_usage);
    EXPECT_NE(err.find("give --yes to confirm"), std::string::npos) << err;
    EXPECT_NE(err.find("is lost"), std::string::npos) << err;
    EXPECT_EQ(run(daemon.url(), {"replica", "commit", "web1"}, &out, &err), exit_usage);
    EXPECT_NE(err.find("give --yes to confirm"), std::string::npos) << err;
    EXPECT_TRUE(daemon.requests().empty());

    ASSERT_EQ(
        run(daemon.url(), {"replica", "failover", "web1", "--point", "4", "--yes"}, &out, &err),
        exit_ok)
        << err;
    EXPECT_EQ(out, "5\n");
    auto sent = daemon.requests().back();
    EXPECT_EQ(sent.path, "/api/v1/replicas/web1/failover");
    EXPECT_EQ(json::parse(sent.body), json::parse(R"({"point": 4})"));
    ASSERT_EQ(run(daemon.url(), {"replica", "commit", "web1", "-y"}, &out, &err), exit_ok) << err;
    EXPECT_EQ(out, "committed the failover of web1\n");
}

TEST(ReplicaCommand, TaskActionsPrintTheTaskAndWaitFollowsIt) {
    FakeDaemon daemon(fake_replica_api);
    std::string out, err;
    ASSERT_EQ(run(daemon.url(), {"replica", "cycle", "web1"}, &out, &err), exit_ok) << err;
    EXPECT_EQ(out, "5\n");
    ASSERT_EQ(run(daemon.url(), {"replica", "planned-failover", "web1", "--wait"}, &out, &err),
              exit_ok)
        << err;
    EXPECT_EQ(out, "5\n2026-12-07 05:30 info    cycle 7 committed\ntask 5 ok\n");
    ASSERT_EQ(run(daemon.url(), {"replica", "test-failover", "web 1"}, &out, &err), exit_ok);
    auto requests = daemon.requests();
    EXPECT_EQ(requests.back().target, "/api/v1/replicas/web%201/test-failover");
    EXPECT_EQ(json::parse(requests.back().body), json::object());
    ASSERT_EQ(run(daemon.url(), {"replica", "import-initial", "/srv/seed", "--json"}, &out, &err),
              exit_ok);
    EXPECT_EQ(json::parse(out), json::parse(R"({"task": 5})"));
    EXPECT_EQ(daemon.requests().back().path, "/api/v1/replicas/-/import-initial");
    EXPECT_EQ(json::parse(daemon.requests().back().body), json::parse(R"({"dir": "/srv/seed"})"));
    // A relative folder is the one under the current directory.
    ASSERT_EQ(run(daemon.url(), {"replica", "export-initial", "web1", "seed"}, &out, &err),
              exit_ok);
    EXPECT_EQ(json::parse(daemon.requests().back().body)["dir"],
              (std::filesystem::current_path() / "seed").string());
}

TEST(ReplicaCommand, QuickActionsSayWhatTheyDid) {
    FakeDaemon daemon(fake_replica_api);
    std::string out, err;
    ASSERT_EQ(run(daemon.url(), {"replica", "pause", "web1"}, &out, &err), exit_ok) << err;
    EXPECT_EQ(out, "paused replication of web1\n");
    ASSERT_EQ(run(daemon.url(), {"replica", "remove", "web1", "--on-replica"}, &out, &err),
              exit_ok);
    EXPECT_EQ(out, "removed replication of web1\n");
    EXPECT_EQ(json::parse(daemon.requests().back().body), json::parse(R"({"on_replica": true})"));
    ASSERT_EQ(run(daemon.url(), {"replica", "stop-test", "web1"}, &out, &err), exit_ok);
    EXPECT_EQ(out, "stopped the test failover of web1\n");
}

TEST(ReplicaCommand, StatusPrintsTheTableOneVmOrTheJson) {
    FakeDaemon daemon(fake_replica_api);
    std::string out, err;
    ASSERT_EQ(run(daemon.url(), {"replica", "status"}, &out, &err), exit_ok) << err;
    EXPECT_TRUE(out.starts_with("VM    ROLE     PEER        STATE    LAST-CYCLE        RPO"))
        << out;
    EXPECT_NE(out.find("3 min 32 s"), std::string::npos) << out;
    EXPECT_NE(out.find("4.2 s / 19 s"), std::string::npos) << out;
    EXPECT_NE(out.find("3.0 GiB"), std::string::npos) << out;
    EXPECT_NE(out.find("db1: warning: 30 % of the last hour's cycles were missed"),
              std::string::npos)
        << out;
    ASSERT_EQ(run(daemon.url(), {"replica", "status", "db1", "--json"}, &out, &err), exit_ok);
    auto shown = json::parse(out);
    ASSERT_EQ(shown["replicas"].size(), 1u);
    EXPECT_EQ(shown["replicas"][0]["vm"], "db1");
    EXPECT_EQ(run(daemon.url(), {"replica", "status", "nope"}, &out, &err), exit_not_found);
    EXPECT_NE(err.find("no replication of 'nope'"), std::string::npos) << err;
    ASSERT_EQ(run(daemon.url(), {"replica", "points", "db1"}, &out, &err), exit_ok) << err;
    EXPECT_EQ(out,
              "SEQ  TIME              CONSISTENCY  TOKEN\n"
              "0    2026-12-07 05:00  crash        vmshadow-1a2b3c4d-20261207T050000\n"
              "4    2026-12-07 05:25  application  vmshadow-1a2b3c4d-20261207T052500\n");
}

TEST(ReplicaViews, IntervalsAreThoseHyperVOffers) {
    EXPECT_EQ(parse_replica_interval("30s"), 30);
    EXPECT_EQ(parse_replica_interval("5m"), 300);
    EXPECT_EQ(parse_replica_interval("15m"), 900);
    for (const char* bad : {"", "30", "300", "5min", "15 m", "1h", "30S", "0s"})
        EXPECT_EQ(parse_replica_interval(bad), std::nullopt) << bad;
}

TEST(ReplicaViews, TablesSurviveHostileAndMissingFieldsAndSayWhenEmpty) {
    EXPECT_EQ(replica_table(json::parse(R"({"replicas": []})")),
              "No replication is configured on this host.\n");
    EXPECT_EQ(replica_table(json::parse("7")), "No replication is configured on this host.\n");
    auto text = replica_table(json::parse(
        R"({"replicas": [{"vm": "evil\u001b[2Jname\nx", "rpo_s": "soon", "bytes_sent": -1,
                          "avg_cycle_s": "x"}, 5, {}]})"));
    EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 4) << text;
    EXPECT_EQ(replica_points_table(json::parse(R"({"points": []})")), "No recovery points yet.\n");
}

}  // namespace
}  // namespace vmshadow::cli
