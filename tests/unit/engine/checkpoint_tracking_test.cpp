// SPDX-License-Identifier: MIT
#include "engine/checkpoint_tracking.h"

#include <gtest/gtest.h>

namespace vmshadow::engine {
namespace {

CheckpointTree tree_with_active(const std::string& image) {
    CheckpointTree t;
    t.vm_uuid = "u";
    t.active = {{"vda", image}};
    return t;
}

TEST(CheckpointTracking, ApplyAfterTheLastPointMakesTheNextReadFullWithTheReason) {
    auto t = tree_with_active("/img/now.qcow2");
    t.tracking_reset_at = 2000;
    t.tracking_reset_reason = "returned to checkpoint 'a'";
    auto why = checkpoint_tracking_broken(t, 1000);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("returned to checkpoint 'a'"), std::string::npos);
    EXPECT_TRUE(checkpoint_tracking_broken(t, 2000));   // same second: full, never wrong
    EXPECT_FALSE(checkpoint_tracking_broken(t, 2001));  // a point after the apply holds
}

TEST(CheckpointTracking, NoRecordNoReset) {
    EXPECT_FALSE(checkpoint_tracking_broken(CheckpointTree{}, 1000));
}

TEST(CheckpointTracking, DiskMovedByACheckpointIsNotAReplacedDisk) {
    auto t = tree_with_active("/img/web.now-1234abcd.qcow2");
    auto out = paths_across_checkpoints(
        t, {{"vda", "/img/web.qcow2"}, {"vdb", "/img/b.qcow2"}},
        {{"vda", "/img/web.now-1234abcd.qcow2"}, {"vdb", "/img/other.qcow2"}});
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].second, "/img/web.now-1234abcd.qcow2");
    EXPECT_EQ(out[1].second, "/img/b.qcow2");  // not the record's: a replaced disk stays one
}

TEST(CheckpointTracking, DiskNotOnTheRecordsImageKeepsItsPreviousPath) {
    auto t = tree_with_active("/img/web.now-1234abcd.qcow2");
    auto out =
        paths_across_checkpoints(t, {{"vda", "/img/web.qcow2"}}, {{"vda", "/img/swapped.qcow2"}});
    EXPECT_EQ(out[0].second, "/img/web.qcow2");
}

}  // namespace
}  // namespace vmshadow::engine
