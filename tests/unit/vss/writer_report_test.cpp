// SPDX-License-Identifier: MIT
#include "vss/writer_report.h"

#include <gtest/gtest.h>

#include "unit/vss/temp_dir.h"

namespace vmshadow::vss {
namespace {

using testing::TempDir;

TEST(WriterReport, SavedReportLoadsBack) {
    TempDir dir;
    WriterReport report;
    report.backup_id = "b9";
    report.started = "2026-11-22T01:00:00Z";
    report.finished = "2026-11-22T01:00:05Z";
    report.error = Error(ErrorKind::timeout, "writer 'pg' timed out at freeze");
    WriterStatus status;
    status.writer_id = "exec:pg";
    status.writer_name = "pg";
    status.state = WriterState::failed_at_freeze;
    status.last_error = WriterFailure{Event::freeze, FailureCode::timeout, "no answer"};
    report.writers.push_back(status);
    auto path = dir / "state" / "writers.json";
    ASSERT_TRUE(save_writer_report(path, report));
    auto loaded = load_writer_report(path);
    ASSERT_TRUE(loaded && *loaded);
    EXPECT_EQ((*loaded)->backup_id, "b9");
    EXPECT_FALSE((*loaded)->succeeded);
    EXPECT_EQ((*loaded)->error->kind(), ErrorKind::timeout);
    EXPECT_EQ((*loaded)->writers.at(0).state, WriterState::failed_at_freeze);
    EXPECT_EQ((*loaded)->finished, "2026-11-22T01:00:05Z");
    // No temp file is left next to it.
    int files = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir / "state")) {
        ++files;
    }
    EXPECT_EQ(files, 1);
}

TEST(WriterReport, MissingFileMeansNothingRecordedYet) {
    TempDir dir;
    auto loaded = load_writer_report(dir / "none.json");
    ASSERT_TRUE(loaded);
    EXPECT_FALSE(*loaded);
}

TEST(WriterReport, GarbageFileIsCorruption) {
    TempDir dir;
    dir.write("writers.json", "{\"format\": \"something-else\"}");
    auto loaded = load_writer_report(dir / "writers.json");
    ASSERT_FALSE(loaded);
    EXPECT_EQ(loaded.error().kind(), ErrorKind::corruption);
}

TEST(WriterReport, UnwritableLocationIsAnError) {
    TempDir dir;
    dir.write("file", "x");
    EXPECT_FALSE(save_writer_report(dir / "file" / "writers.json", WriterReport{}));
}

}  // namespace
}  // namespace vmshadow::vss
