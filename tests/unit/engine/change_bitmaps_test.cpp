// SPDX-License-Identifier: MIT
#include "engine/change_bitmaps.h"

#include <gtest/gtest.h>

#include "engine/snapshot_run.h"

namespace vmshadow::engine {
namespace {

virt::CheckpointInfo checkpoint(std::string name, std::int64_t time,
                                std::vector<virt::CheckpointDisk> disks) {
    virt::CheckpointInfo c;
    c.name = std::move(name);
    c.creation_time = time;
    c.disks = std::move(disks);
    return c;
}

const std::vector<virt::CheckpointInfo> kChains = {
    checkpoint("vmshadow-aaaaaaaa-20261207T080000.000Z", 100, {{"vda", "a1"}, {"vdb", "a1"}}),
    checkpoint("vmshadow-bbbbbbbb-20261207T080100.000Z", 160, {{"vda", "b1"}, {"vdb", "b1"}}),
    checkpoint("vmshadow-aaaaaaaa-20261207T080200.000Z", 220, {{"vda", "a2"}, {"vdb", ""}}),
    checkpoint("vmshadow-bbbbbbbb-20261207T080300.000Z", 280, {{"vda", "b2"}}),
};

TEST(ChangeBitmaps, ChangesSinceACheckpointMergeItsBitmapAndEveryLaterOneOfAnyChain) {
    auto b = bitmaps_since(kChains, "vmshadow-bbbbbbbb-20261207T080100.000Z", "vda");
    ASSERT_TRUE(b);
    EXPECT_EQ(*b, (std::vector<std::string>{"b1", "a2", "b2"}));
}

TEST(ChangeBitmaps, LaterCheckpointsWithoutABitmapForTheDiskAreSkipped) {
    auto b = bitmaps_since(kChains, "vmshadow-aaaaaaaa-20261207T080000.000Z", "vdb");
    ASSERT_TRUE(b);
    EXPECT_EQ(*b, (std::vector<std::string>{"a1", "b1"}));
}

TEST(ChangeBitmaps, ACheckpointMadeInTheSameSecondSortedBeforeItIsMerged) {
    auto same = kChains;
    same[0].creation_time = 160;  // sorts before b1 by name, made in the same second
    auto b = bitmaps_since(same, "vmshadow-bbbbbbbb-20261207T080100.000Z", "vda");
    ASSERT_TRUE(b);
    EXPECT_EQ(*b, (std::vector<std::string>{"b1", "a1", "a2", "b2"}));
}

TEST(ChangeBitmaps, AMissingCheckpointOrADiskItLacksMeansAFullRead) {
    EXPECT_FALSE(bitmaps_since(kChains, "vmshadow-cccccccc-20261207T080000.000Z", "vda"));
    EXPECT_FALSE(bitmaps_since(kChains, "vmshadow-bbbbbbbb-20261207T080300.000Z", "vdb"));
    EXPECT_FALSE(bitmaps_since(kChains, "vmshadow-aaaaaaaa-20261207T080200.000Z", "vdb"));
}

TEST(ChangeBitmaps, TheMergedBitmapIsNeverTakenForACheckpoint) {
    std::string name = merged_bitmap_name("0123456789abcdef");
    EXPECT_EQ(name, "vmshadow-changes-01234567");
    EXPECT_FALSE(virt::checkpoint_repo(name));
}

TEST(SnapshotRun, NbdAccessStringsGiveExportAndSocket) {
    std::string name, socket;
    ASSERT_TRUE(parse_nbd_access("nbd+unix:///vda?socket=/run/x.sock", name, socket));
    EXPECT_EQ(name, "vda");
    EXPECT_EQ(socket, "/run/x.sock");
    EXPECT_FALSE(parse_nbd_access("file:/var/lib/x.qcow2", name, socket));
    EXPECT_FALSE(parse_nbd_access("nbd+unix:///vda", name, socket));
}

}  // namespace
}  // namespace vmshadow::engine
