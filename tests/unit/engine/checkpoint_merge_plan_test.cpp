// SPDX-License-Identifier: MIT
#include "engine/checkpoint_merge_plan.h"

#include <gtest/gtest.h>

namespace vmshadow::engine {
namespace {

Checkpoint make(const std::string& id, const std::string& parent) {
    Checkpoint c;
    c.id = id;
    c.name = "cp-" + id;
    c.parent = parent;
    c.disks = {{"vda", "/img/" + id + ".qcow2"}};
    return c;
}

// a ─ b ─ c, now above c (the running chain: a, b, c, now).
CheckpointTree chain_tree() {
    CheckpointTree t;
    t.vm_uuid = "u";
    t.checkpoints = {make("0000000a", ""), make("0000000b", "0000000a"),
                     make("0000000c", "0000000b")};
    t.current = "0000000c";
    t.active = {{"vda", "/img/now.qcow2"}};
    return t;
}

const Checkpoint& get(const CheckpointTree& t, const std::string& id) {
    return **find_checkpoint(t, id);
}

TEST(CheckpointMergePlan, MiddleOfRunningChainIsCommittedIntoByItsOpenChild) {
    auto t = chain_tree();
    auto plan = plan_checkpoint_merge(t, get(t, "0000000b"), true);
    ASSERT_EQ(plan.disks.size(), 1u);
    const auto& d = plan.disks[0];
    EXPECT_EQ(d.layer, "/img/0000000b.qcow2");
    EXPECT_EQ(d.layer_backing, "/img/0000000a.qcow2");
    EXPECT_TRUE(d.pull.empty());
    ASSERT_TRUE(d.has_keep);
    EXPECT_EQ(d.keep_merge, LayerMerge::commit_intermediate);
    EXPECT_EQ(d.keep_owner, "0000000c");
    EXPECT_TRUE(d.repoint.empty());  // now rests on c: libvirt re-points it
    EXPECT_FALSE(plan.resets_tracking);

    auto after = tree_after_merge(t, plan);
    ASSERT_EQ(after.checkpoints.size(), 2u);
    EXPECT_EQ(get(after, "0000000c").parent, "0000000a");
    EXPECT_EQ(get(after, "0000000c").disks[0].image, "/img/0000000b.qcow2");
    EXPECT_EQ(after.current, "0000000c");
}

TEST(CheckpointMergePlan, CurrentCheckpointOfRunningVmTakesTheActiveOverlay) {
    auto t = chain_tree();
    auto plan = plan_checkpoint_merge(t, get(t, "0000000c"), true);
    const auto& d = plan.disks[0];
    ASSERT_TRUE(d.has_keep);
    EXPECT_EQ(d.keep_merge, LayerMerge::commit_active);
    EXPECT_EQ(d.keep_owner, kNowOwner);
    auto after = tree_after_merge(t, plan);
    EXPECT_EQ(after.current, "0000000b");
    EXPECT_EQ(after.active[0].image, "/img/0000000c.qcow2");
}

TEST(CheckpointMergePlan, ShutOffVmNeverCommitsNowAndResetsTracking) {
    auto t = chain_tree();
    auto plan = plan_checkpoint_merge(t, get(t, "0000000c"), false);
    const auto& d = plan.disks[0];
    EXPECT_FALSE(d.has_keep);
    ASSERT_EQ(d.pull.size(), 1u);
    EXPECT_EQ(d.pull[0], "/img/now.qcow2");
    EXPECT_TRUE(plan.resets_tracking);

    auto middle = plan_checkpoint_merge(t, get(t, "0000000b"), false);
    ASSERT_TRUE(middle.disks[0].has_keep);
    EXPECT_EQ(middle.disks[0].keep_merge, LayerMerge::commit_offline);
    ASSERT_EQ(middle.disks[0].repoint.size(), 1u);
    EXPECT_EQ(middle.disks[0].repoint[0], "/img/now.qcow2");  // rested on c
    EXPECT_TRUE(middle.resets_tracking);
}

TEST(CheckpointMergePlan, SeveralDependantsAllButTheOpenOnePull) {
    auto t = chain_tree();
    t.checkpoints.push_back(make("0000000d", "0000000b"));  // a sibling branch of c
    auto plan = plan_checkpoint_merge(t, get(t, "0000000b"), true);
    const auto& d = plan.disks[0];
    ASSERT_EQ(d.pull.size(), 1u);
    EXPECT_EQ(d.pull[0], "/img/0000000d.qcow2");
    EXPECT_EQ(d.keep_owner, "0000000c");
    auto after = tree_after_merge(t, plan);
    EXPECT_EQ(get(after, "0000000d").parent, "0000000a");
    EXPECT_EQ(get(after, "0000000d").disks[0].image, "/img/0000000d.qcow2");
}

TEST(CheckpointMergePlan, OffBranchCheckpointIsMergedOfflineEvenWhileRunning) {
    auto t = chain_tree();
    t.checkpoints.push_back(make("0000000d", "0000000b"));
    t.checkpoints.push_back(make("0000000e", "0000000d"));
    auto plan = plan_checkpoint_merge(t, get(t, "0000000d"), true);
    const auto& d = plan.disks[0];
    ASSERT_TRUE(d.has_keep);
    EXPECT_EQ(d.keep_merge, LayerMerge::commit_offline);
    EXPECT_EQ(d.keep_owner, "0000000e");
    EXPECT_FALSE(plan.resets_tracking);
}

TEST(CheckpointMergePlan, LeafOffTheRunningChainIsJustDropped) {
    auto t = chain_tree();
    t.checkpoints.push_back(make("0000000d", "0000000b"));
    auto plan = plan_checkpoint_merge(t, get(t, "0000000d"), true);
    EXPECT_FALSE(plan.disks[0].has_keep);
    EXPECT_TRUE(plan.disks[0].pull.empty());
}

TEST(CheckpointMergePlan, RetryAfterACommitOnlyPullsTheRest) {
    auto t = chain_tree();
    t.checkpoints.push_back(make("0000000d", "0000000b"));
    auto first = plan_checkpoint_merge(t, get(t, "0000000b"), true);
    record_disk_merged(t, first.disks[0]);  // c committed, then the run failed
    auto retry = plan_checkpoint_merge(t, get(t, "0000000b"), true);
    EXPECT_FALSE(retry.disks[0].has_keep);
    ASSERT_EQ(retry.disks[0].pull.size(), 1u);
    EXPECT_EQ(retry.disks[0].pull[0], "/img/0000000d.qcow2");
}

TEST(CheckpointMergePlan, MovedDependantIsNeverKept) {
    auto t = chain_tree();
    t.checkpoints.push_back(make("0000000d", "0000000b"));
    t.checkpoints.push_back(make("0000000e", "0000000b"));
    auto plan = plan_checkpoint_merge(t, get(t, "0000000b"), false, {"/img/0000000c.qcow2"});
    ASSERT_TRUE(plan.disks[0].has_keep);
    EXPECT_EQ(plan.disks[0].keep_owner, "0000000d");
    EXPECT_EQ(plan.disks[0].pull.size(), 2u);
}

TEST(CheckpointMergePlan, SubtreeGoesLeavesFirst) {
    auto t = chain_tree();
    t.checkpoints.push_back(make("0000000d", "0000000b"));
    auto order = subtree_deletion_order(t, "0000000b");
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(order.back(), "0000000b");
    EXPECT_NE(order[0], "0000000b");
    EXPECT_NE(order[1], "0000000b");
}

TEST(CheckpointMergePlan, RootCheckpointPullsOntoNothing) {
    auto t = chain_tree();
    t.checkpoints.push_back(make("0000000d", "0000000a"));
    auto plan = plan_checkpoint_merge(t, get(t, "0000000a"), true);
    EXPECT_EQ(plan.disks[0].layer_backing, "");
    EXPECT_EQ(plan.disks[0].keep_owner, "0000000b");
    EXPECT_EQ(plan.disks[0].pull, std::vector<std::string>{"/img/0000000d.qcow2"});
    auto after = tree_after_merge(t, plan);
    EXPECT_EQ(get(after, "0000000b").parent, "");
}

}  // namespace
}  // namespace vmshadow::engine
