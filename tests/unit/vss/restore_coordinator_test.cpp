// SPDX-License-Identifier: MIT
#include "vss/restore_coordinator.h"

#include <gtest/gtest.h>

#include "unit/vss/fake_writer.h"
#include "vss/coordinator.h"

namespace vmshadow::vss {
namespace {

using testing::EventLog;
using testing::FakeProvider;
using testing::FakeWriter;

struct Restore {
    std::shared_ptr<EventLog> log = std::make_shared<EventLog>();
    std::shared_ptr<FakeWriter> writer = std::make_shared<FakeWriter>("vm", log, 2);
    BackupDocument saved;

    Restore() {
        writer->on_event = [](EventContext& c) {
            if (c.event != Event::post_snapshot) return;
            for (auto& component : c.components) component.backup_stamp = "ckpt-1";
        };
        Coordinator backup({writer}, std::make_shared<FakeProvider>(log), {});
        auto document = run_backup(backup, {});
        if (!document) throw std::runtime_error(document.error().message());
        saved = *document;
    }
    RestoreCoordinator restorer() { return RestoreCoordinator({writer}, saved, {}); }
};

TEST(RestoreCoordinator, PreRestoreThenPostRestoreWithTheFileRestoreStatus) {
    Restore r;
    auto restore = r.restorer();
    ASSERT_TRUE(restore.gather_writer_metadata());
    ASSERT_TRUE(restore.select_all_for_restore());
    ASSERT_TRUE(restore.pre_restore());
    EventContext pre = r.writer->last_context(Event::pre_restore);
    EXPECT_EQ(pre.operation, Operation::restore);
    ASSERT_EQ(pre.components.size(), 2u);
    EXPECT_EQ(pre.components[0].backup_stamp, "ckpt-1");
    EXPECT_EQ(pre.components[0].file_restore_status, FileRestoreStatus::undefined);
    for (const auto& c : r.saved.components) {
        ASSERT_TRUE(restore.set_file_restore_status(c.key, FileRestoreStatus::all));
    }
    ASSERT_TRUE(restore.post_restore());
    EventContext post = r.writer->last_context(Event::post_restore);
    EXPECT_EQ(post.components[1].file_restore_status, FileRestoreStatus::all);
    EXPECT_EQ(r.writer->calls(Event::abort), 0);
    EXPECT_TRUE(restore.report().succeeded);
}

TEST(RestoreCoordinator, VetoAtPreRestoreIsReportedWithoutAbortAndPostRestoreStillRuns) {
    Restore r;
    r.writer->veto_at(Event::pre_restore, FailureCode::nonretryable, "VM is locked");
    auto restore = r.restorer();
    ASSERT_TRUE(restore.gather_writer_metadata());
    ASSERT_TRUE(restore.select_all_for_restore());
    auto pre = restore.pre_restore();
    ASSERT_FALSE(pre);
    EXPECT_EQ(pre.error().kind(), ErrorKind::cancelled);
    EXPECT_FALSE(restore.post_restore());
    EXPECT_EQ(r.writer->calls(Event::post_restore), 1);
    EXPECT_EQ(r.writer->last_context(Event::post_restore).components[0].file_restore_status,
              FileRestoreStatus::none);
    EXPECT_EQ(r.writer->calls(Event::abort), 0);
    EXPECT_EQ(restore.document().results[0].state, WriterState::failed_at_pre_restore);
}

TEST(RestoreCoordinator, VetoAtPostRestoreFailsTheRestore) {
    Restore r;
    r.writer->veto_at(Event::post_restore, FailureCode::nonretryable, "disk missing");
    auto restore = r.restorer();
    ASSERT_TRUE(restore.gather_writer_metadata());
    ASSERT_TRUE(restore.select_all_for_restore());
    ASSERT_TRUE(restore.pre_restore());
    auto post = restore.post_restore();
    ASSERT_FALSE(post);
    EXPECT_NE(post.error().message().find("disk missing"), std::string::npos);
    EXPECT_EQ(restore.document().results[0].state, WriterState::failed_at_post_restore);
}

TEST(RestoreCoordinator, ComponentOfAMissingWriterCannotBeSelected) {
    Restore r;
    auto other = std::make_shared<FakeWriter>("other", r.log);
    RestoreCoordinator restore({other}, r.saved, {});
    ASSERT_TRUE(restore.gather_writer_metadata());
    auto selected = restore.select_all_for_restore();
    ASSERT_FALSE(selected);
    EXPECT_EQ(selected.error().kind(), ErrorKind::unavailable);
}

TEST(RestoreCoordinator, ComponentNotInTheBackupCannotBeSelected) {
    Restore r;
    auto restore = r.restorer();
    ASSERT_TRUE(restore.gather_writer_metadata());
    EXPECT_EQ(restore.select_for_restore({"vm", "vm", "nope"}).error().kind(),
              ErrorKind::not_found);
}

}  // namespace
}  // namespace vmshadow::vss
