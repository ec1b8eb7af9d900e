// SPDX-License-Identifier: MIT
#include "daemon/metrics.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "unit/common/temp_dir.h"

namespace vmshadow::daemon {
namespace {

constexpr const char* kPromtool = "/usr/bin/promtool";

MetricsSnapshot rich_snapshot() {
    MetricsSnapshot s;
    s.version = "0.14.0-dev \"beta\"";
    s.start_time = 1800000000.5;
    VmMetrics web{"web1", 1800003600, 42.25, 1073741824, 0.125, 0};
    VmMetrics odd{"we\"ird\\vm\nname", 1800000100, 3, 0, std::nullopt, 7};
    VmMetrics never{"never-backed-up", std::nullopt, std::nullopt, std::nullopt, std::nullopt, 2};
    VmMetrics unicode{"datenbank-ü-日本", 1.8e9, 0.001, 18446744073709551615ull, 1e-3, 0};
    s.vms = {web, odd, never, unicode};
    s.repositories = {{"main", 500000000, 2000000000}, {"off\"site\\b", 1, 3}, {"empty", 0, 0}};
    s.tasks_queued = 3;
    s.tasks_running = 1;
    s.tasks_finished = {{{"backup", "ok"}, 12},
                        {{"backup", "failed"}, 2},
                        {{"verify", "cancelled"}, 1},
                        {{"gc", "interrupted"}, 1}};
    return s;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

bool has_line(const std::string& text, const std::string& line) {
    auto all = lines_of(text);
    return std::find(all.begin(), all.end(), line) != all.end();
}

// `promtool check metrics < file`: its exit status and what it printed.
std::pair<int, std::string> promtool_check(const std::string& exposition) {
    test::TempDir dir;
    std::string in = dir.at("metrics.txt"), out = dir.at("promtool.out");
    std::ofstream(in) << exposition;
    std::string command =
        std::string("timeout 20 ") + kPromtool + " check metrics < " + in + " > " + out + " 2>&1";
    int status = std::system(command.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, test::read_all(out)};
}

TEST(Metrics, RichSnapshotPassesPromtoolCheckMetrics) {
    if (::access(kPromtool, X_OK) != 0)
        GTEST_SKIP() << kPromtool << " is absent (Debian's prometheus package): not checked";
    auto text = render_metrics(rich_snapshot());
    auto [status, output] = promtool_check(text);
    EXPECT_EQ(status, 0) << output << "\n---\n" << text;
    EXPECT_EQ(output, "") << text;
}

TEST(Metrics, EmptySnapshotPassesPromtoolCheckMetrics) {
    if (::access(kPromtool, X_OK) != 0)
        GTEST_SKIP() << kPromtool << " is absent (Debian's prometheus package): not checked";
    auto text = render_metrics(MetricsSnapshot{});
    auto [status, output] = promtool_check(text);
    EXPECT_EQ(status, 0) << output << "\n---\n" << text;
}

// The check itself can fail: a broken exposition is reported (so a pass above means something).
TEST(Metrics, PromtoolRejectsAnUnescapedLabel) {
    if (::access(kPromtool, X_OK) != 0)
        GTEST_SKIP() << kPromtool << " is absent (Debian's prometheus package): not checked";
    auto [status, output] =
        promtool_check("# HELP x_total A.\n# TYPE x_total counter\nx_total{vm=\"a\"b\"} 1\n");
    EXPECT_NE(status, 0) << output;
}

TEST(Metrics, LabelValuesEscapeBackslashQuoteAndNewline) {
    auto text = render_metrics(rich_snapshot());
    EXPECT_TRUE(has_line(text, R"(vmshadow_vm_backup_failures_total{vm="we\"ird\\vm\nname"} 7)"))
        << text;
    EXPECT_TRUE(has_line(text, R"(vmshadow_repository_size_bytes{repository="off\"site\\b"} 1)"))
        << text;
    EXPECT_TRUE(has_line(text, R"(vmshadow_info{version="0.14.0-dev \"beta\""} 1)")) << text;
}

TEST(Metrics, ExactLinesOfARichSnapshot) {
    auto text = render_metrics(rich_snapshot());
    for (const char* line : {
             "# HELP vmshadow_info The daemon's version (the value is always 1).",
             "# TYPE vmshadow_info gauge",
             "vmshadow_daemon_start_time_seconds 1800000000.5",
             "# TYPE vmshadow_vm_last_success_timestamp_seconds gauge",
             "vmshadow_vm_last_success_timestamp_seconds{vm=\"web1\"} 1800003600",
             "vmshadow_vm_last_success_timestamp_seconds{vm=\"datenbank-ü-日本\"} 1800000000",
             "vmshadow_vm_last_backup_duration_seconds{vm=\"web1\"} 42.25",
             "vmshadow_vm_last_backup_added_bytes{vm=\"web1\"} 1073741824",
             "vmshadow_vm_last_backup_added_bytes{vm=\"datenbank-ü-日本\"} 18446744073709551615",
             "vmshadow_vm_last_freeze_window_seconds{vm=\"web1\"} 0.125",
             "vmshadow_vm_last_freeze_window_seconds{vm=\"datenbank-ü-日本\"} 0.001",
             "# TYPE vmshadow_vm_backup_failures_total counter",
             "vmshadow_vm_backup_failures_total{vm=\"never-backed-up\"} 2",
             "vmshadow_vm_backup_failures_total{vm=\"web1\"} 0",
             "vmshadow_repository_size_bytes{repository=\"main\"} 500000000",
             "vmshadow_repository_logical_bytes{repository=\"main\"} 2000000000",
             "vmshadow_repository_dedup_ratio{repository=\"main\"} 4",
             "vmshadow_repository_dedup_ratio{repository=\"off\\\"site\\\\b\"} 3",
             "vmshadow_tasks{state=\"queued\"} 3",
             "vmshadow_tasks{state=\"running\"} 1",
             "# TYPE vmshadow_tasks_finished_total counter",
             "vmshadow_tasks_finished_total{kind=\"backup\",state=\"failed\"} 2",
             "vmshadow_tasks_finished_total{kind=\"backup\",state=\"ok\"} 12",
             "vmshadow_tasks_finished_total{kind=\"gc\",state=\"interrupted\"} 1",
             "vmshadow_queue_length 3",
         })
        EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n---\n" << text;
    EXPECT_EQ(text.back(), '\n');
}

// What a snapshot does not know is absent, not a made-up zero.
TEST(Metrics, UnknownValuesHaveNoSample) {
    auto text = render_metrics(rich_snapshot());
    for (const char* prefix : {"vmshadow_vm_last_success_timestamp_seconds{vm=\"never-backed-up\"}",
                               "vmshadow_vm_last_backup_duration_seconds{vm=\"never-backed-up\"}",
                               "vmshadow_vm_last_freeze_window_seconds{vm=\"we\\\"ird",
                               "vmshadow_repository_dedup_ratio{repository=\"empty\"}"})
        EXPECT_EQ(text.find(prefix), std::string::npos) << prefix;
    EXPECT_TRUE(has_line(text, "vmshadow_repository_size_bytes{repository=\"empty\"} 0"));
}

// Each family once, HELP then TYPE, then only its own samples, in the header's order.
TEST(Metrics, EachFamilyOnceInAFixedOrder) {
    const std::vector<std::string> order{"vmshadow_info",
                                         "vmshadow_daemon_start_time_seconds",
                                         "vmshadow_vm_last_success_timestamp_seconds",
                                         "vmshadow_vm_last_backup_duration_seconds",
                                         "vmshadow_vm_last_backup_added_bytes",
                                         "vmshadow_vm_last_freeze_window_seconds",
                                         "vmshadow_vm_backup_failures_total",
                                         "vmshadow_repository_size_bytes",
                                         "vmshadow_repository_logical_bytes",
                                         "vmshadow_repository_dedup_ratio",
                                         "vmshadow_tasks",
                                         "vmshadow_tasks_finished_total",
                                         "vmshadow_queue_length"};
    for (const auto& snapshot : {rich_snapshot(), MetricsSnapshot{}}) {
        std::vector<std::string> families;
        std::string current;
        for (const auto& line : lines_of(render_metrics(snapshot))) {
            if (line.starts_with("# HELP ")) {
                current = line.substr(7, line.find(' ', 7) - 7);
                families.push_back(current);
            } else if (line.starts_with("# TYPE ")) {
                EXPECT_TRUE(line.starts_with("# TYPE " + current + " ")) << line;
            } else {
                auto name = line.substr(0, line.find_first_of("{ "));
                EXPECT_EQ(name, current) << line;
            }
        }
        EXPECT_EQ(families, order);
    }
}

TEST(Metrics, OutputDoesNotDependOnInputOrderAndDuplicatesCollapse) {
    auto a = rich_snapshot();
    auto b = rich_snapshot();
    std::reverse(b.vms.begin(), b.vms.end());
    std::reverse(b.repositories.begin(), b.repositories.end());
    EXPECT_EQ(render_metrics(a), render_metrics(b));

    auto dup = rich_snapshot();
    dup.vms.push_back(VmMetrics{"web1", 1, 1, 1, 1, 99});
    dup.repositories.push_back(RepositoryMetrics{"main", 1, 1});
    auto text = render_metrics(dup);
    EXPECT_EQ(text, render_metrics(a)) << "the first entry of a name wins";
}

TEST(Metrics, NonUtf8LabelBytesAreReplaced) {
    MetricsSnapshot s;
    s.vms = {VmMetrics{"bad\xff\xc0name\xed\xa0\x80", std::nullopt, std::nullopt, std::nullopt,
                       std::nullopt, 1}};
    auto text = render_metrics(s);
    EXPECT_TRUE(has_line(text,
                         "vmshadow_vm_backup_failures_total{vm=\"bad\xEF\xBF\xBD\xEF\xBF\xBD"
                         "name\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"} 1"))
        << text;
}

TEST(Metrics, SpecialFloatsUsePrometheusSpelling) {
    MetricsSnapshot s;
    s.vms = {VmMetrics{"a", std::numeric_limits<double>::quiet_NaN(),
                       std::numeric_limits<double>::infinity(), std::nullopt,
                       -std::numeric_limits<double>::infinity(), 0}};
    auto text = render_metrics(s);
    EXPECT_TRUE(has_line(text, "vmshadow_vm_last_success_timestamp_seconds{vm=\"a\"} NaN"));
    EXPECT_TRUE(has_line(text, "vmshadow_vm_last_backup_duration_seconds{vm=\"a\"} +Inf"));
    EXPECT_TRUE(has_line(text, "vmshadow_vm_last_freeze_window_seconds{vm=\"a\"} -Inf"));
}

// ---- replica -------------------------------------------------------------------------------

nlohmann::json rich_replicas() {
    return nlohmann::json::parse(R"({"replicas": [
      {"vm": "web1", "uuid": "u1", "role": "primary", "peer": "hostb:8471", "state": "normal",
       "interval_s": 300, "last_cycle": "2027-01-15T08:00:00Z", "rpo_s": 212.5,
       "avg_cycle_s": 4.25, "max_cycle_s": 19, "bytes_sent": 123456789012,
       "missed_cycles": 2, "points": 5},
      {"vm": "db\"1\\x\nz", "role": "replica", "peer": "CN=hosta", "state": "warning",
       "last_cycle": null, "rpo_s": null, "avg_cycle_s": 0, "max_cycle_s": 0,
       "bytes_sent": 0, "missed_cycles": 0},
      {"vm": "datenbank-ü", "role": "primary", "state": "resync-required",
       "last_cycle": 1800000000, "rpo_s": "soon", "bytes_sent": -5},
      {"vm": "web1", "role": "replica", "state": "failed-over", "rpo_s": 1},
      {"role": "primary", "state": "normal"},
      "not an object"
    ]})");
}

TEST(ReplicaMetrics, RichListPassesPromtoolCheckMetrics) {
    if (::access(kPromtool, X_OK) != 0)
        GTEST_SKIP() << kPromtool << " is absent (Debian's prometheus package): not checked";
    for (const auto& list : {rich_replicas(), nlohmann::json::parse(R"({"replicas": []})")}) {
        auto text = render_metrics(rich_snapshot()) + render_replica_metrics(list);
        auto [status, output] = promtool_check(text);
        EXPECT_EQ(status, 0) << output << "\n---\n" << text;
        EXPECT_EQ(output, "") << text;
    }
}

TEST(ReplicaMetrics, ExactLinesWithEscapedLabels) {
    auto text = render_replica_metrics(rich_replicas());
    for (const char* line : {
             "# TYPE vmshadow_replica_state gauge",
             "vmshadow_replica_state{vm=\"web1\",role=\"primary\",state=\"normal\"} 1",
             "vmshadow_replica_state{vm=\"web1\",role=\"replica\",state=\"failed-over\"} 1",
             "vmshadow_replica_state{vm=\"db\\\"1\\\\x\\nz\",role=\"replica\",state=\"warning\"} 1",
             "vmshadow_replica_state{vm=\"datenbank-ü\",role=\"primary\",state=\"resync-required\"}"
             " "
             "1",
             "vmshadow_replica_rpo_seconds{vm=\"web1\"} 212.5",
             "vmshadow_replica_last_cycle_timestamp_seconds{vm=\"web1\"} 1800000000",
             "vmshadow_replica_last_cycle_timestamp_seconds{vm=\"datenbank-ü\"} 1800000000",
             "vmshadow_replica_cycle_seconds_avg{vm=\"web1\"} 4.25",
             "vmshadow_replica_cycle_seconds_max{vm=\"web1\"} 19",
             "vmshadow_replica_cycle_seconds_max{vm=\"db\\\"1\\\\x\\nz\"} 0",
             "# TYPE vmshadow_replica_sent_bytes_total counter",
             "vmshadow_replica_sent_bytes_total{vm=\"web1\"} 123456789012",
             "# TYPE vmshadow_replica_missed_cycles_total counter",
             "vmshadow_replica_missed_cycles_total{vm=\"web1\"} 2",
         })
        EXPECT_TRUE(has_line(text, line)) << "missing: " << line << "\n---\n" << text;
}

// Unknown (null, of another type, negative counters) is absent; a VM in both roles has one
// series per {vm} family, its primary entry's.
TEST(ReplicaMetrics, UnknownValuesHaveNoSampleAndEachVmOneSeries) {
    auto text = render_replica_metrics(rich_replicas());
    for (const char* prefix :
         {"vmshadow_replica_rpo_seconds{vm=\"db", "vmshadow_replica_rpo_seconds{vm=\"datenbank",
          "vmshadow_replica_last_cycle_timestamp_seconds{vm=\"db",
          "vmshadow_replica_sent_bytes_total{vm=\"datenbank",
          "vmshadow_replica_rpo_seconds{vm=\"web1\"} 1\n"})
        EXPECT_EQ(text.find(prefix), std::string::npos) << prefix << "\n" << text;
    for (const char* family : {"vmshadow_replica_rpo_seconds{vm=\"web1\"}",
                               "vmshadow_replica_sent_bytes_total{vm=\"web1\"}"}) {
        std::size_t count = 0;
        for (auto pos = text.find(family); pos != std::string::npos;
             pos = text.find(family, pos + 1))
            ++count;
        EXPECT_EQ(count, 1u) << family;
    }
    EXPECT_EQ(render_replica_metrics(nlohmann::json::array()),
              render_replica_metrics(nlohmann::json::parse(R"({"replicas": []})")));
    // Whatever the JSON, text and no exception.
    for (const char* odd : {"null", "3", R"({"replicas": 7})", R"([{"vm": 3}])", "{}"})
        EXPECT_NE(render_replica_metrics(nlohmann::json::parse(odd)).find("# TYPE"),
                  std::string::npos)
            << odd;
}

TEST(ReplicaMetrics, OutputDoesNotDependOnInputOrder) {
    auto list = rich_replicas();
    auto reversed = list;
    std::reverse(reversed["replicas"].begin(), reversed["replicas"].end());
    // web1 twice: the (vm, role) order, not the input's, decides which entry speaks for it.
    EXPECT_EQ(render_replica_metrics(list), render_replica_metrics(reversed));
}

}  // namespace
}  // namespace vmshadow::daemon
