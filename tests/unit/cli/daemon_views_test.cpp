// SPDX-License-Identifier: MIT
// What `vmshadow status`, `job list`, `task list|show|log` and `token list` print from the
// daemon's JSON, and the job JSON `job add|edit` send: fixtures in, text or JSON out.
#include "cli/daemon_views.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

namespace vmshadow::cli {
namespace {

using nlohmann::json;

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// Where each column starts in the header: every row has its cells there too.
void expect_aligned(const std::string& table, const std::vector<std::string>& headers) {
    auto lines = lines_of(table);
    ASSERT_FALSE(lines.empty());
    std::vector<std::size_t> starts;
    for (const auto& h : headers) {
        auto at = lines[0].find(h);
        ASSERT_NE(at, std::string::npos) << h << " in " << lines[0];
        starts.push_back(at);
    }
    for (std::size_t i = 1; i < lines.size(); ++i)
        for (std::size_t c = 1; c < starts.size(); ++c) {
            ASSERT_GT(lines[i].size(), starts[c]) << lines[i];
            EXPECT_EQ(lines[i][starts[c] - 1], ' ') << "row " << i << ": " << lines[i];
            EXPECT_NE(lines[i][starts[c]], ' ') << "row " << i << " col " << c << ": " << lines[i];
        }
}

const json kVms = json::parse(R"([
  {"name": "web", "state": "running", "method": "application", "jobs": ["nightly"],
   "next_run": "2026-12-08T22:00:00Z", "last_point": "0123abcd", "last_backup":
   "2026-12-07T02:00:00Z", "age_s": 11520, "consistency": "application",
   "protection": "protected"},
  {"name": "a-much-longer-vm-name", "state": "shut off", "method": "offline", "jobs": [],
   "next_run": null, "protection": "unprotected"}
])");

TEST(DaemonViews, AgesAreHuman) {
    EXPECT_EQ(format_age(0), "0 s");
    EXPECT_EQ(format_age(42), "42 s");
    EXPECT_EQ(format_age(750), "12 min 30 s");
    EXPECT_EQ(format_age(60), "1 min 0 s");
    EXPECT_EQ(format_age(11520), "3 h 12 min");
    EXPECT_EQ(format_age(3600), "1 h 0 min");
    EXPECT_EQ(format_age(190800), "2 d 5 h");
    EXPECT_EQ(format_age(-5), "0 s");  // a clock a little ahead of the daemon's
}

TEST(DaemonViews, StatusTableHasOneAlignedLinePerVm) {
    std::string table = status_table(kVms);
    auto lines = lines_of(table);
    ASSERT_EQ(lines.size(), 3u) << table;
    expect_aligned(table, {"NAME", "STATE", "METHOD", "LAST-BACKUP", "AGE", "CONSISTENCY",
                           "NEXT-RUN", "PROTECTION"});
    EXPECT_NE(lines[1].find("web"), std::string::npos);
    EXPECT_NE(lines[1].find("2026-12-07 02:00"), std::string::npos) << lines[1];
    EXPECT_NE(lines[1].find("3 h 12 min"), std::string::npos) << lines[1];
    EXPECT_NE(lines[1].find("2026-12-08 22:00"), std::string::npos) << lines[1];
    EXPECT_TRUE(lines[1].ends_with("protected")) << lines[1];
    EXPECT_TRUE(lines[2].ends_with("unprotected")) << lines[2];
    EXPECT_NE(lines[2].find("shut off"), std::string::npos);
    for (const auto& l : lines) EXPECT_FALSE(l.ends_with(" ")) << "'" << l << "'";
}

TEST(DaemonViews, TablesSurviveHostileAndMissingFields) {
    json vms = json::array({
        {{"name", "evil\n\x1b[2Jname"}, {"state", 42}, {"age_s", "soon"}, {"next_run", true}},
        {{"name", std::string(300, 'x')}},
        "not an object",
        json::object(),
    });
    std::string table;
    ASSERT_NO_THROW(table = status_table(vms));
    auto lines = lines_of(table);
    ASSERT_EQ(lines.size(), 5u) << table;
    EXPECT_EQ(table.find('\x1b'), std::string::npos);
    EXPECT_NE(lines[1].find("evil\\n\\x1b[2Jname"), std::string::npos) << lines[1];
    EXPECT_LT(lines[2].size(), 200u);  // a 300-character name is cut, with "~"
    EXPECT_NE(lines[2].find("~"), std::string::npos);
    // Answers that are not lists at all print just the header.
    for (const json& odd : {json(), json("x"), json::object(), json{{"vms", 3}}}) {
        EXPECT_EQ(lines_of(status_table(odd)).size(), 1u);
        EXPECT_EQ(lines_of(job_table(odd)).size(), 1u);
        EXPECT_EQ(lines_of(task_table(odd)).size(), 1u);
        EXPECT_EQ(lines_of(token_table(odd)).size(), 1u);
        EXPECT_NO_THROW(task_details(odd));
        EXPECT_NO_THROW(log_line_text(odd));
    }
}

TEST(DaemonViews, JobTableShowsScheduleVmsAndRuns) {
    json jobs = json::parse(R"({"digest": "abc", "jobs": [
      {"id": "nightly", "kind": "backup", "schedule": "Mon..Fri 22:00", "repository": "main",
       "vms": ["web*", "db1"], "next_run": "2026-12-07T22:00:00Z", "last_task": 7,
       "last_success": "2026-12-04T22:03:00Z", "enabled": true},
      {"id": "check", "kind": "check", "schedule": "", "repository": "main",
       "next_run": null, "last_task": null, "last_success": null, "enabled": false}
    ]})");
    std::string table = job_table(jobs);
    auto lines = lines_of(table);
    ASSERT_EQ(lines.size(), 3u) << table;
    expect_aligned(table,
                   {"ID", "KIND", "SCHEDULE", "VMS", "REPOSITORY", "NEXT-RUN", "LAST-SUCCESS"});
    EXPECT_NE(lines[1].find("Mon..Fri 22:00"), std::string::npos);
    EXPECT_NE(lines[1].find("web*,db1"), std::string::npos);
    EXPECT_NE(lines[1].find("2026-12-04 22:03"), std::string::npos);
    EXPECT_NE(lines[2].find("(on demand) (disabled)"), std::string::npos) << lines[2];
}

const json kTask = json::parse(R"({
  "id": 12, "kind": "backup", "job": "nightly", "target": "web", "trigger": "schedule",
  "state": "failed", "queued_at": 1796608800, "started_at": 1796608805,
  "ended_at": 1796609000, "log_lines": 14,
  "progress": {"phase": "copy", "item": "vda", "bytes_done": 512, "bytes_total": 1024,
               "items_done": 1, "items_total": 2},
  "error": "guest agent did not answer", "error_kind": "timeout",
  "result": {"points": ["a", "b"], "bytes_added": 4096, "vm": "web"}
})");

TEST(DaemonViews, TaskTableAndDetails) {
    std::string table = task_table(json{{"tasks", {kTask}}});
    expect_aligned(table,
                   {"ID", "STATE", "KIND", "JOB", "TARGET", "TRIGGER", "STARTED", "DURATION"});
    EXPECT_NE(table.find("3 min 15 s"), std::string::npos) << table;
    std::string details = task_details(kTask);
    EXPECT_NE(details.find("state:     failed\n"), std::string::npos) << details;
    EXPECT_NE(details.find("started:   2026-12-07 "), std::string::npos) << details;
    EXPECT_NE(details.find("duration:  3 min 15 s\n"), std::string::npos) << details;
    EXPECT_NE(details.find("progress:  copy vda 512/1024 bytes (50 %) 1/2 items"),
              std::string::npos)
        << details;
    EXPECT_NE(details.find("error:     guest agent did not answer (timeout)"), std::string::npos)
        << details;
    EXPECT_NE(details.find("bytes_added=4096"), std::string::npos) << details;
    EXPECT_NE(details.find("points=2 item(s)"), std::string::npos) << details;
    // A queued task has no start, end or duration line.
    json queued{{"id", 13}, {"state", "queued"}, {"started_at", nullptr}, {"ended_at", nullptr}};
    std::string q = task_details(queued);
    EXPECT_EQ(q.find("started"), std::string::npos) << q;
    EXPECT_EQ(q.find("duration"), std::string::npos) << q;
}

TEST(DaemonViews, LogLinesAreTimeLevelText) {
    json line{
        {"n", 3}, {"time", "2026-12-07T05:30:00Z"}, {"level", "warning"}, {"text", "slow\nfreeze"}};
    EXPECT_EQ(log_line_text(line), "2026-12-07 05:30 warning slow\\nfreeze");
    line["level"] = "info";
    EXPECT_EQ(log_line_text(line), "2026-12-07 05:30 info    slow\\nfreeze");
}

TEST(DaemonViews, TokenTableHasNoSecrets) {
    json tokens{
        {"tokens", {{{"name", "ci"}, {"role", "operator"}, {"created", "2026-12-01T10:00:00Z"}}}}};
    auto lines = lines_of(token_table(tokens));
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0], "NAME  ROLE      CREATED");
    EXPECT_EQ(lines[1], "ci    operator  2026-12-01 10:00");
}

TEST(DaemonViews, JobChangesHoldOnlyWhatWasGiven) {
    JobOptions o;
    EXPECT_EQ(job_changes(o), json::object());
    o.kind = "backup";
    o.vms = {"web*", "db1"};
    o.keep_daily = 7;
    o.catch_up = "all";
    o.boot = false;
    o.read_data_percent = 0;
    EXPECT_EQ(job_changes(o), json::parse(R"({"kind": "backup", "vms": ["web*", "db1"],
        "keep_daily": 7, "catch_up": "all", "boot": false, "read_data_percent": 0})"));
    json body = new_job_body("nightly", o, "d1");
    EXPECT_EQ(body["digest"], "d1");
    EXPECT_EQ(body["job"]["id"], "nightly");
    EXPECT_EQ(body["job"]["keep_daily"], 7);
    o.after = "";
    EXPECT_FALSE(new_job_body("nightly", o, "d1")["job"].contains("after"));
}

TEST(DaemonViews, EditKeepsTheRestAndDropsWhatGetAdded) {
    json answer = json::parse(R"({"digest": "d", "jobs": [
      {"id": "nightly", "kind": "backup", "schedule": "daily", "repository": "main",
       "vms": ["web"], "method": "auto", "group": false, "alert_after_hours": 0,
       "keep_daily": 7, "catch_up": "one", "notify": "failure", "enabled": true,
       "after": "other", "next_run": "2026-12-08T00:00:00Z", "last_task": 3,
       "last_success": null}]})");
    JobOptions o;
    o.schedule = "hourly";
    o.after = "";
    auto job = edited_job_body(answer, "nightly", o);
    ASSERT_TRUE(job) << job.error().message();
    EXPECT_EQ((*job)["schedule"], "hourly");
    EXPECT_EQ((*job)["keep_daily"], 7);
    EXPECT_EQ((*job)["vms"], json::array({"web"}));
    for (const char* gone : {"next_run", "last_task", "last_success", "after"})
        EXPECT_FALSE(job->contains(gone)) << gone;

    // Backup → verify: the backup-only fields go, the VMs stay.
    JobOptions v;
    v.kind = "verify";
    job = edited_job_body(answer, "nightly", v);
    ASSERT_TRUE(job);
    EXPECT_EQ((*job)["kind"], "verify");
    EXPECT_EQ((*job)["vms"], json::array({"web"}));
    for (const char* gone : {"method", "group", "alert_after_hours", "keep_daily"})
        EXPECT_FALSE(job->contains(gone)) << gone;

    auto missing = edited_job_body(answer, "nope", o);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::not_found);
}

}  // namespace
}  // namespace vmshadow::cli
