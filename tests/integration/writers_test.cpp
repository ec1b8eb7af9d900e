// SPDX-License-Identifier: MIT
// `vmshadow writers` as a user runs it: the built binary reads a writer state file and exec
// writer configs, and `writers test` calls real hook scripts (veto, hang → process group
// killed). No guest needed.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "integration/cli_runner.h"

namespace vmshadow {
namespace {

using json = nlohmann::json;

class WritersCli : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "writers-it-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        std::filesystem::create_directories(dir_ / "writers.d");
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    void add_writer(const std::string& name, const std::string& body, json extra = json::object()) {
        auto script = dir_ / (name + ".sh");
        std::ofstream(script) << "#!/bin/sh\n" << body;
        ::chmod(script.c_str(), 0755);
        json config{{"name", name}, {"command", {script.string()}}};
        config.update(extra);
        std::ofstream(dir_ / "writers.d" / (name + ".json")) << config.dump();
    }
    std::string read(const std::string& name) {
        std::ifstream in(dir_ / name);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }

    std::filesystem::path dir_;
};

TEST_F(WritersCli, JsonShowsWhatHappenedInTheLastBackup) {
    std::ofstream(dir_ / "writers.json") << R"J({
      "format": "vmshadow-writer-state", "version": 1, "backup_id": "20261122T010203Z-1a2b",
      "operation": "backup", "started": "2026-11-22T01:02:03Z",
      "finished": "2026-11-22T01:02:09Z", "outcome": "failed",
      "error": "writer 'pgsql' timed out at freeze: no answer within 10000 ms (retryable)",
      "error_kind": "timeout",
      "writers": [
        {"writer_id": "exec:pgsql", "writer_name": "pgsql", "state": "failed-at-freeze",
         "last_error": {"event": "freeze", "code": "timeout", "retryable": true,
                        "message": "no answer within 10000 ms"},
         "freeze_window_ms": null, "events": []},
        {"writer_id": "vmshadow-libvirt-vm", "writer_name": "web1", "state": "stable",
         "last_error": null, "freeze_window_ms": 12, "events": []}]})J";
    add_writer("pgsql", "exit 0\n");
    auto run = testing::run_vmshadow({"writers", "--json", "--state-file",
                                      (dir_ / "writers.json").string(), "--writers-dir",
                                      (dir_ / "writers.d").string()});
    ASSERT_EQ(run.exit_code, 0) << run.err;
    auto out = json::parse(run.out);
    EXPECT_EQ(out["last"]["outcome"], "failed");
    EXPECT_EQ(out["last"]["writers"][0]["state"], "failed-at-freeze");
    EXPECT_EQ(out["last"]["writers"][0]["last_error"]["code"], "timeout");
    EXPECT_EQ(out["last"]["writers"][1]["freeze_window_ms"], 12);
    EXPECT_EQ(out["configured"][0]["writer_id"], "exec:pgsql");

    auto text = testing::run_vmshadow({"writers", "--state-file", (dir_ / "writers.json").string(),
                                       "--writers-dir", (dir_ / "writers.d").string()});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_NE(text.out.find("failed-at-freeze"), std::string::npos);
    EXPECT_NE(text.out.find("no answer within 10000 ms"), std::string::npos);
}

TEST_F(WritersCli, TestPassesTheEnvironmentAndARetryableVetoExitsCancelled) {
    add_writer("db",
               "echo \"$1 $VMSHADOW_VMS $VMSHADOW_WRITER\" >> \"$(dirname \"$0\")/log\"\n"
               "[ \"$1\" = thaw ] && { echo 'replica lost' >&2; exit 75; }\nexit 0\n");
    auto run = testing::run_vmshadow({"writers", "test", "--vm", "web1", "--vm", "db1",
                                      "--writers-dir", (dir_ / "writers.d").string()});
    EXPECT_EQ(run.exit_code, 12) << run.out << run.err;
    EXPECT_NE(run.err.find("replica lost (retryable)"), std::string::npos) << run.err;
    EXPECT_EQ(read("log"),
              "identify web1 db1 db\nprepare-backup web1 db1 db\nprepare-snapshot web1 db1 db\n"
              "freeze web1 db1 db\nthaw web1 db1 db\nabort web1 db1 db\n");
}

TEST_F(WritersCli, HangingHookTimesOutAndItsProcessGroupIsKilled) {
    add_writer("slow",
               "[ \"$1\" = freeze ] || exit 0\n"
               "sleep 1000 & echo $! > \"$(dirname \"$0\")/child.pid\"\nsleep 1000\n",
               json{{"timeouts", {{"freeze", 0.5}}}});
    auto started = std::chrono::steady_clock::now();
    auto run = testing::run_vmshadow(
        {"writers", "test", "--json", "--writers-dir", (dir_ / "writers.d").string()});
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
    EXPECT_EQ(run.exit_code, 5) << run.out << run.err;
    EXPECT_EQ(json::parse(run.out)["kind"], "timeout");
    pid_t child = std::stoi(read("child.pid"));
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {
        std::ifstream stat("/proc/" + std::to_string(child) + "/stat");
        std::string line;
        gone = !std::getline(stat, line) || line.find(") Z ") != std::string::npos;
        if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(gone) << "the hook's background child survived";
}

}  // namespace
}  // namespace vmshadow
