// SPDX-License-Identifier: MIT
#include "cli/progress_output.h"

#include <gtest/gtest.h>
#include <stdio.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

namespace vmshadow::cli {
namespace {

using namespace std::chrono_literals;

std::vector<nlohmann::json> lines_of(std::FILE* file) {
    std::fflush(file);
    std::rewind(file);
    std::vector<nlohmann::json> lines;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, file)) lines.push_back(nlohmann::json::parse(buffer));
    return lines;
}

TEST(TerminalProgress, LineNamesPhaseItemBytesPercentRateAndEta) {
    Progress p{
        .phase = "copy", .item = "web1/vda", .bytes_done = 512ull << 20, .bytes_total = 1ull << 30};
    auto line = TerminalProgress::render(p, 4s);
    EXPECT_NE(line.find("copy web1/vda"), std::string::npos) << line;
    EXPECT_NE(line.find("512.0 MiB / 1.0 GiB"), std::string::npos) << line;
    EXPECT_NE(line.find(" 50%"), std::string::npos) << line;
    EXPECT_NE(line.find("128.0 MiB/s"), std::string::npos) << line;
    EXPECT_NE(line.find("ETA 0:04"), std::string::npos) << line;
}

TEST(TerminalProgress, UnknownTotalShowsNoPercentOrEta) {
    Progress p{.phase = "commit", .bytes_done = 1024};
    auto line = TerminalProgress::render(p, 1s);
    EXPECT_EQ(line.find('%'), std::string::npos) << line;
    EXPECT_EQ(line.find("ETA"), std::string::npos) << line;
}

TEST(TerminalProgress, QuickOperationsDrawNothing) {
    std::FILE* out = std::tmpfile();
    TerminalProgress sink(out);
    sink.update(Progress{.phase = "copy", .bytes_done = 1, .bytes_total = 2});
    sink.finish();
    EXPECT_EQ(std::ftell(out), 0);
    std::fclose(out);
}

TEST(JsonProgress, EachPhaseEndsWithItsFinalCountAndTheLastLineIsTheEnd) {
    std::FILE* out = std::tmpfile();
    JsonProgress sink(out);
    sink.update(Progress{.phase = "copy", .bytes_done = 0, .bytes_total = 300});
    sink.update(Progress{.phase = "copy", .bytes_done = 100, .bytes_total = 300});
    sink.update(Progress{.phase = "copy", .bytes_done = 300, .bytes_total = 300});
    sink.update(Progress{.phase = "commit"});
    sink.update(Progress{.phase = "commit", .items_done = 1, .items_total = 1});
    sink.finish();
    auto lines = lines_of(out);
    std::fclose(out);
    ASSERT_GE(lines.size(), 4u);
    // The copy phase's last line carries all 300 bytes, before the first commit line.
    std::size_t first_commit = 0;
    while (lines[first_commit]["phase"] == "copy") ++first_commit;
    EXPECT_EQ(lines[first_commit - 1]["bytes_done"], 300);
    EXPECT_EQ(lines.back()["phase"], "commit");
    EXPECT_EQ(lines.back()["items_done"], 1);
    std::uint64_t previous = 0;
    for (std::size_t i = 0; i < first_commit; ++i) {
        EXPECT_GE(lines[i]["bytes_done"].get<std::uint64_t>(), previous);
        previous = lines[i]["bytes_done"];
    }
}

TEST(ProgressOutput, QuietOrNoneShowsNothingAndJsonAlwaysWrites) {
    EXPECT_EQ(make_progress_output(ProgressMode::automatic, true), nullptr);
    EXPECT_EQ(make_progress_output(ProgressMode::none, false), nullptr);
    EXPECT_NE(make_progress_output(ProgressMode::json, true), nullptr);
}

}  // namespace
}  // namespace vmshadow::cli
