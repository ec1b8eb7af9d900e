// SPDX-License-Identifier: MIT
// The stale-backup watch: it fires for a VM with no successful backup in H hours even when
// its job never ran, once per VM until the next success re-arms it.
#include "daemon/stale_watch.h"

#include <gtest/gtest.h>

namespace vmshadow::daemon {
namespace {

JobSpec watched(unsigned hours) {
    JobSpec job;
    job.id = "nightly";
    job.kind = JobKind::backup;
    job.vms = {"web*"};
    job.repository = "main";
    job.schedule = "daily";
    job.alert_after_hours = hours;
    return job;
}

constexpr std::int64_t kStart = 1796601600;

TEST(StaleWatchTest, AVmNeverBackedUpAlertsAfterTheLimitEvenWhenTheJobNeverRan) {
    std::vector<JobSpec> jobs{watched(26)};
    std::map<std::string, std::vector<std::string>> vms{{"nightly", {"web1", "web2"}}};
    std::map<std::string, std::int64_t> last{{"web2", kStart + 20 * 3600}};
    std::set<std::string> alerted;
    // 25 h after the daemon started: not yet.
    EXPECT_TRUE(
        stale_backup_alerts({jobs, vms, last, kStart + 25 * 3600, kStart}, alerted).empty());
    // 26 h: web1 (never backed up) alerts; web2 (backed up 6 h ago) does not.
    auto due = stale_backup_alerts({jobs, vms, last, kStart + 26 * 3600, kStart}, alerted);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0].vm, "web1");
    EXPECT_EQ(due[0].event, "no_recent_backup");
    EXPECT_EQ(due[0].job, "nightly");
    EXPECT_FALSE(due[0].task);
    EXPECT_NE(due[0].message.find("26 h"), std::string::npos) << due[0].message;
    // Once: a minute later nothing new.
    EXPECT_TRUE(
        stale_backup_alerts({jobs, vms, last, kStart + 26 * 3600 + 60, kStart}, alerted).empty());
    // web2 goes stale 26 h after its last success.
    due = stale_backup_alerts({jobs, vms, last, kStart + 46 * 3600, kStart}, alerted);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0].vm, "web2");
}

TEST(StaleWatchTest, ASuccessReArmsTheAlertAndOffJobsNeverAlert) {
    std::vector<JobSpec> jobs{watched(1)};
    std::map<std::string, std::vector<std::string>> vms{{"nightly", {"web1"}}};
    std::map<std::string, std::int64_t> last;
    std::set<std::string> alerted;
    EXPECT_EQ(stale_backup_alerts({jobs, vms, last, kStart + 3600, kStart}, alerted).size(), 1u);
    alerted.erase("web1");  // what the daemon does after a successful backup of web1
    last["web1"] = kStart + 2 * 3600;
    EXPECT_TRUE(
        stale_backup_alerts({jobs, vms, last, kStart + 2 * 3600 + 60, kStart}, alerted).empty());
    EXPECT_EQ(stale_backup_alerts({jobs, vms, last, kStart + 3 * 3600, kStart}, alerted).size(),
              1u);

    std::set<std::string> none;
    for (JobSpec off : {watched(0), watched(1)}) {
        if (off.alert_after_hours) off.enabled = false;
        std::vector<JobSpec> j{off};
        EXPECT_TRUE(stale_backup_alerts({j, vms, {}, kStart + 1000 * 3600, kStart}, none).empty());
    }
}

}  // namespace
}  // namespace vmshadow::daemon
