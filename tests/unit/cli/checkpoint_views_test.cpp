// SPDX-License-Identifier: MIT
// How `checkpoint list` draws the tree: children under their parent in creation order,
// "Now" under the current checkpoint (at the top when there is none), and the JSON form.
#include "cli/checkpoint_views.h"

#include <gtest/gtest.h>

namespace vmshadow::cli {
namespace {

engine::Checkpoint checkpoint(std::string id, std::string name, std::string parent) {
    engine::Checkpoint c;
    c.id = std::move(id);
    c.name = std::move(name);
    c.parent = std::move(parent);
    c.consistency = "application";
    c.disks = {{"vda", "/img/" + c.id + ".qcow2"}};
    return c;
}

engine::CheckpointTree sample() {
    engine::CheckpointTree t;
    t.vm_name = "web1";
    t.vm_uuid = "u";
    t.checkpoints = {checkpoint("0000000a", "a", ""), checkpoint("0000000b", "b", "0000000a"),
                     checkpoint("0000000c", "c", "0000000a")};
    t.checkpoints[2].type = engine::CheckpointType::standard;
    t.checkpoints[2].consistency = "running-state";
    t.current = "0000000b";
    t.active = {{"vda", "/img/now.qcow2"}};
    return t;
}

TEST(CheckpointViews, TreeShowsNowUnderTheCurrentCheckpoint) {
    auto t = sample();
    std::string text = render_checkpoint_tree(t);
    std::string when = local_minute(0);
    EXPECT_EQ(text,
              "web1\n"
              "└─ a  (production, " +
                  when +
                  ", application)\n"
                  "   ├─ b  (production, " +
                  when +
                  ", application)\n"
                  "   │  └─ Now\n"
                  "   └─ c  (standard, " +
                  when + ", running-state)\n");
}

TEST(CheckpointViews, NowAtTheTopWhenNoCheckpointIsCurrent) {
    auto t = sample();
    t.current.clear();
    std::string text = render_checkpoint_tree(t);
    EXPECT_EQ(text.find("web1\n├─ Now\n└─ a  ("), 0u) << text;
}

TEST(CheckpointViews, JsonNamesNowAndTheReset) {
    auto t = sample();
    t.tracking_reset_at = 1;
    t.tracking_reset_reason = "returned to checkpoint 'b'";
    auto j = checkpoint_tree_json(t);
    EXPECT_EQ(j["vm"], "web1");
    EXPECT_EQ(j["current"], "0000000b");
    EXPECT_EQ(j["now"]["parent"], "0000000b");
    EXPECT_EQ(j["now"]["disks"][0]["image"], "/img/now.qcow2");
    ASSERT_EQ(j["checkpoints"].size(), 3u);
    EXPECT_TRUE(j["checkpoints"][0]["parent"].is_null());
    EXPECT_EQ(j["checkpoints"][2]["type"], "standard");
    EXPECT_EQ(j["tracking_reset_at"], "1970-01-01T00:00:01Z");
    EXPECT_EQ(j["tracking_reset_reason"], "returned to checkpoint 'b'");
}

TEST(CheckpointViews, UnfinishedDeleteIsShownWithTheCommandThatFinishesIt) {
    auto t = sample();
    t.checkpoints[2].delete_unfinished = true;
    std::string text = render_checkpoint_tree(t);
    EXPECT_NE(text.find("   └─ c  (standard, " + local_minute(0) +
                        ", running-state)  [delete unfinished: run `vmshadow checkpoint delete "
                        "web1 c` again; do not apply]\n"),
              std::string::npos)
        << text;
    EXPECT_EQ(text.find("delete unfinished"), text.rfind("delete unfinished")) << "c only";
    auto j = checkpoint_tree_json(t);
    EXPECT_EQ(j["checkpoints"][2]["delete_unfinished"], true);
    EXPECT_EQ(j["checkpoints"][1]["delete_unfinished"], false);
}

}  // namespace
}  // namespace vmshadow::cli
