// SPDX-License-Identifier: MIT
// `vmshadow writers [--json]` and `vmshadow writers test`, run through run_cli() as the
// binary would, against a state file and exec writer configs in a temp dir.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/app.h"
#include "cli/exit_code.h"
#include "vss/writer_report.h"

namespace vmshadow::cli {
namespace {

class WritersCommand : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "writers-cli-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        std::filesystem::create_directories(dir_ / "writers.d");
        ::setenv("VMSHADOW_CONFIG", (dir_ / "none.conf").c_str(), 1);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    // Runs `vmshadow args...`; returns the exit code, stdout in `out`.
    int run(std::vector<std::string> args, std::string& out) {
        args.insert(args.begin(), "vmshadow");
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        ::testing::internal::CaptureStdout();
        int code = run_cli(static_cast<int>(argv.size()), argv.data());
        out = ::testing::internal::GetCapturedStdout();
        return code;
    }
    void add_writer(const std::string& name, const std::string& script_body) {
        auto script = dir_ / (name + ".sh");
        std::ofstream(script) << "#!/bin/sh\n" << script_body;
        ::chmod(script.c_str(), 0755);
        nlohmann::json config{{"name", name}, {"command", {script.string()}}};
        std::ofstream(dir_ / "writers.d" / (name + ".json")) << config.dump();
    }

    std::filesystem::path dir_;
};

TEST_F(WritersCommand, JsonShowsTheStatesAndErrorsOfTheLastBackup) {
    vss::WriterReport report;
    report.backup_id = "20261122T010203Z-1a2b";
    report.started = "2026-11-22T01:02:03Z";
    report.finished = "2026-11-22T01:02:04Z";
    report.error = Error(ErrorKind::cancelled, "writer 'pg' failed at freeze: locked");
    vss::WriterStatus pg;
    pg.writer_id = "exec:pg";
    pg.writer_name = "pg";
    pg.state = vss::WriterState::failed_at_freeze;
    pg.last_error = vss::WriterFailure{vss::Event::freeze, vss::FailureCode::retryable, "locked"};
    vss::WriterStatus vm;
    vm.writer_id = "vmshadow-libvirt-vm";
    vm.writer_name = "web1";
    vm.freeze_window = std::chrono::milliseconds(35);
    report.writers = {pg, vm};
    ASSERT_TRUE(vss::save_writer_report(dir_ / "writers.json", report));
    add_writer("pg", "exit 0\n");
    add_writer("other", "exit 0\n");

    std::string out;
    ASSERT_EQ(run({"writers", "--json", "--state-file", (dir_ / "writers.json").string(),
                   "--writers-dir", (dir_ / "writers.d").string()},
                  out),
              exit_ok);
    auto json = nlohmann::json::parse(out);
    EXPECT_EQ(json["last"]["backup_id"], "20261122T010203Z-1a2b");
    EXPECT_EQ(json["last"]["outcome"], "failed");
    EXPECT_EQ(json["last"]["error_kind"], "cancelled");
    EXPECT_EQ(json["last"]["writers"][0]["state"], "failed-at-freeze");
    EXPECT_EQ(json["last"]["writers"][0]["last_error"]["retryable"], true);
    EXPECT_EQ(json["last"]["writers"][1]["freeze_window_ms"], 35);
    ASSERT_EQ(json["configured"].size(), 2u);
    EXPECT_EQ(json["configured"][0]["name"], "other");
    EXPECT_TRUE(json["config_error"].is_null());
}

TEST_F(WritersCommand, TextSaysWhenNothingWasRecordedYet) {
    std::string out;
    ASSERT_EQ(run({"writers", "--state-file", (dir_ / "missing.json").string(), "--writers-dir",
                   (dir_ / "writers.d").string()},
                  out),
              exit_ok);
    EXPECT_NE(out.find("No backup has recorded writer states yet"), std::string::npos);
}

TEST_F(WritersCommand, CorruptStateFileIsReportedAsCorruption) {
    std::ofstream(dir_ / "writers.json") << "{";
    std::string out;
    EXPECT_EQ(run({"writers", "--state-file", (dir_ / "writers.json").string()}, out),
              exit_corruption);
}

TEST_F(WritersCommand, TestRunsTheExecWritersAndFailsWithTheirVeto) {
    add_writer("pg",
               "echo \"$1\" >> \"$(dirname \"$0\")/log\"\n"
               "[ \"$1\" = freeze ] && { echo 'cannot lock tables' >&2; exit 3; }\nexit 0\n");
    std::string out;
    int code =
        run({"writers", "test", "--json", "--writers-dir", (dir_ / "writers.d").string()}, out);
    EXPECT_EQ(code, exit_cancelled);
    auto json = nlohmann::json::parse(out);
    EXPECT_EQ(json["kind"], "cancelled");
    EXPECT_EQ(json["error"],
              "writer 'pg' failed at freeze: exit status 3: cannot lock tables (not retryable)");
    std::ifstream log(dir_ / "log");
    std::string all((std::istreambuf_iterator<char>(log)), {});
    EXPECT_EQ(all, "identify\nprepare-backup\nprepare-snapshot\nfreeze\nabort\n");
}

TEST_F(WritersCommand, TestOfOneEventCallsOnlyThatEvent) {
    add_writer("pg", "echo \"$1\" >> \"$(dirname \"$0\")/log\"\n");
    std::string out;
    ASSERT_EQ(
        run({"writers", "test", "--event", "thaw", "--writers-dir", (dir_ / "writers.d").string()},
            out),
        exit_ok);
    std::ifstream log(dir_ / "log");
    std::string all((std::istreambuf_iterator<char>(log)), {});
    EXPECT_EQ(all, "thaw\n");
    EXPECT_NE(out.find("Test run"), std::string::npos);
}

TEST_F(WritersCommand, TestWithoutExecWritersIsNotFound) {
    std::string out;
    EXPECT_EQ(run({"writers", "test", "--writers-dir", (dir_ / "writers.d").string()}, out),
              exit_not_found);
}

}  // namespace
}  // namespace vmshadow::cli
