// SPDX-License-Identifier: MIT
// The checkpoint record without libvirt: it survives a save and a load, a damaged or foreign
// record is refused naming its file, the invariants of checkpoint_tree.h are enforced, and the
// queries (find, children, path to "now", warnings) answer from the tree alone.
#include "engine/checkpoint_tree.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

// Points $VMSHADOW_CHECKPOINT_DIR at a fresh temp dir for the test, and puts it back.
struct TempCheckpointDir {
    fs::path path;
    std::string old;
    bool had_old = false;
    TempCheckpointDir() {
        std::string t = (fs::temp_directory_path() / "ckpt-tree-test-XXXXXX").string();
        path = ::mkdtemp(t.data());
        if (const char* e = std::getenv("VMSHADOW_CHECKPOINT_DIR")) had_old = true, old = e;
        ::setenv("VMSHADOW_CHECKPOINT_DIR", path.c_str(), 1);
    }
    ~TempCheckpointDir() {
        if (had_old)
            ::setenv("VMSHADOW_CHECKPOINT_DIR", old.c_str(), 1);
        else
            ::unsetenv("VMSHADOW_CHECKPOINT_DIR");
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

Checkpoint make_checkpoint(std::string id, std::string name, std::string parent,
                           std::int64_t created = 1000) {
    Checkpoint c;
    c.id = std::move(id);
    c.name = std::move(name);
    c.parent = std::move(parent);
    c.created = created;
    c.consistency = "application";
    c.disks = {{"vda", "/var/lib/libvirt/images/web1.ckpt-" + c.id + ".qcow2"}};
    c.domain_xml = "<domain/>";
    return c;
}

// root ── a ── b (current)
//      └─ c
CheckpointTree sample_tree() {
    CheckpointTree t;
    t.vm_uuid = "6f1c0e0e-0000-4000-8000-000000000001";
    t.vm_name = "web1";
    t.checkpoints = {
        make_checkpoint("0000000a", "root", ""), make_checkpoint("0000000b", "a", "0000000a"),
        make_checkpoint("0000000c", "b", "0000000b"), make_checkpoint("0000000d", "c", "0000000a")};
    t.checkpoints[3].type = CheckpointType::standard;
    t.checkpoints[3].memory_file = "/x/0000000d.mem";
    t.current = "0000000c";
    t.active = {{"vda", "/var/lib/libvirt/images/web1.now-1234abcd.qcow2"}};
    return t;
}

TEST(CheckpointTree, SavedTreeLoadsBackEqual) {
    TempCheckpointDir dir;
    CheckpointTree t = sample_tree();
    t.tracking_reset_at = 4242;
    t.tracking_reset_reason = "returned to checkpoint 'a'";
    ASSERT_TRUE(save_checkpoint_tree(t));
    EXPECT_TRUE(fs::exists(dir.path / t.vm_uuid / "tree.json"));
    auto loaded = load_checkpoint_tree(t.vm_uuid);
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_EQ(checkpoint_tree_to_json(*loaded), checkpoint_tree_to_json(t));
    EXPECT_EQ(loaded->checkpoints[3].type, CheckpointType::standard);
    EXPECT_EQ(loaded->checkpoints[3].memory_file, "/x/0000000d.mem");
    EXPECT_EQ(loaded->tracking_reset_at, 4242);
}

TEST(CheckpointTree, UnfinishedDeleteSurvivesASaveAndALoad) {
    TempCheckpointDir dir;
    CheckpointTree t = sample_tree();
    t.checkpoints[1].delete_unfinished = true;
    ASSERT_TRUE(save_checkpoint_tree(t));
    auto loaded = load_checkpoint_tree(t.vm_uuid);
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_TRUE(loaded->checkpoints[1].delete_unfinished);
    EXPECT_FALSE(loaded->checkpoints[0].delete_unfinished);
}

TEST(CheckpointTree, OlderRecordSayingSoInItsNoteIsAnUnfinishedDelete) {
    CheckpointTree t = sample_tree();
    t.checkpoints[1].note =
        "deleting it stopped part-way (cancelled): its layer already holds its dependant's data";
    // As an older vmshadow wrote it: no "delete_unfinished" field.
    auto j = nlohmann::json::parse(checkpoint_tree_to_json(t));
    for (auto& c : j["checkpoints"]) c.erase("delete_unfinished");
    auto loaded = checkpoint_tree_from_json(j.dump(), "tree.json");
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_TRUE(loaded->checkpoints[1].delete_unfinished);
    EXPECT_FALSE(loaded->checkpoints[2].delete_unfinished);
}

TEST(CheckpointTree, ApplyOfAnUnfinishedDeleteIsRefusedNamingTheCommandThatFinishesIt) {
    CheckpointTree t = sample_tree();
    EXPECT_TRUE(check_can_apply(t, t.checkpoints[1]));
    t.checkpoints[1].delete_unfinished = true;
    auto st = check_can_apply(t, t.checkpoints[1]);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::conflict);
    const std::string& m = st.error().message();
    EXPECT_EQ(m.find('\n'), std::string::npos) << "one line";
    EXPECT_NE(m.find("checkpoint 'a' of vm 'web1'"), std::string::npos) << m;
    EXPECT_NE(m.find("run `vmshadow checkpoint delete web1 a` again"), std::string::npos) << m;
}

TEST(CheckpointTree, FinishDeleteCommandQuotesWhatTheShellWouldSplit) {
    CheckpointTree t = sample_tree();
    Checkpoint c = t.checkpoints[0];
    c.name = "before upgrade";
    EXPECT_EQ(finish_delete_command(t, c), "vmshadow checkpoint delete web1 'before upgrade'");
    c.name = "it's";
    EXPECT_EQ(finish_delete_command(t, c), "vmshadow checkpoint delete web1 'it'\\''s'");
    c.name = "v1.2";
    EXPECT_EQ(finish_delete_command(t, c), "vmshadow checkpoint delete web1 v1.2");
}

TEST(CheckpointTree, VmWithoutRecordHasAnEmptyTree) {
    TempCheckpointDir dir;
    auto loaded = load_checkpoint_tree("no-such-uuid");
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_EQ(loaded->vm_uuid, "no-such-uuid");
    EXPECT_TRUE(loaded->checkpoints.empty());
    EXPECT_TRUE(loaded->current.empty());
}

TEST(CheckpointTree, RemovedRecordLeavesNoFolder) {
    TempCheckpointDir dir;
    CheckpointTree t = sample_tree();
    ASSERT_TRUE(save_checkpoint_tree(t));
    std::ofstream(dir.path / t.vm_uuid / "0000000d.mem") << "memory";
    ASSERT_TRUE(remove_checkpoint_tree(t.vm_uuid));
    EXPECT_FALSE(fs::exists(dir.path / t.vm_uuid));
    EXPECT_TRUE(remove_checkpoint_tree(t.vm_uuid)) << "removing twice is fine";
}

TEST(CheckpointTree, UnparsableRecordIsCorruptionNamingTheFile) {
    TempCheckpointDir dir;
    fs::create_directories(dir.path / "u1");
    std::ofstream(dir.path / "u1" / "tree.json") << "{\"version\": 1, \"vm_uu";
    auto loaded = load_checkpoint_tree("u1");
    ASSERT_FALSE(loaded);
    EXPECT_EQ(loaded.error().kind(), ErrorKind::corruption);
    EXPECT_NE(loaded.error().message().find((dir.path / "u1" / "tree.json").string()),
              std::string::npos)
        << loaded.error().message();
}

TEST(CheckpointTree, FieldOfTheWrongTypeIsCorruption) {
    auto r = checkpoint_tree_from_json(
        R"({"version":1,"vm_uuid":"u","checkpoints":[{"id":5,"name":"x","type":"standard"}]})",
        "t.json");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::corruption);
}

TEST(CheckpointTree, NewerVersionIsUnsupported) {
    auto r = checkpoint_tree_from_json(R"({"version":2,"vm_uuid":"u"})", "t.json");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::unsupported);
    EXPECT_NE(r.error().message().find("version 2"), std::string::npos);
}

TEST(CheckpointTree, RecordOfAnotherVmIsRefused) {
    TempCheckpointDir dir;
    CheckpointTree t = sample_tree();
    fs::create_directories(dir.path / "other");
    std::ofstream(dir.path / "other" / "tree.json") << checkpoint_tree_to_json(t);
    auto loaded = load_checkpoint_tree("other");
    ASSERT_FALSE(loaded);
    EXPECT_EQ(loaded.error().kind(), ErrorKind::corruption);
}

// Each broken invariant, through the JSON form the loader checks.
void expect_corrupt(const CheckpointTree& t, const std::string& why) {
    auto r = checkpoint_tree_from_json(checkpoint_tree_to_json(t), "t.json");
    ASSERT_FALSE(r) << why;
    EXPECT_EQ(r.error().kind(), ErrorKind::corruption) << why;
    EXPECT_FALSE(save_checkpoint_tree(t)) << "save refuses it too: " << why;
}

TEST(CheckpointTree, BrokenInvariantsAreCorruption) {
    TempCheckpointDir dir;
    {
        auto t = sample_tree();
        t.checkpoints[1].id = "0000000A";
        t.checkpoints[2].parent = "0000000A";
        expect_corrupt(t, "upper-case id");
    }
    {
        auto t = sample_tree();
        t.checkpoints[1].id = "0000000a";
        expect_corrupt(t, "duplicate id");
    }
    {
        auto t = sample_tree();
        t.checkpoints[1].name = "root";
        expect_corrupt(t, "duplicate name");
    }
    {
        auto t = sample_tree();
        t.checkpoints[1].name = "0000000c";
        expect_corrupt(t, "name is another checkpoint's id");
    }
    {
        auto t = sample_tree();
        t.checkpoints[1].name = "";
        expect_corrupt(t, "empty name");
    }
    {
        auto t = sample_tree();
        t.checkpoints[1].name = std::string(101, 'x');
        expect_corrupt(t, "name too long");
    }
    {
        auto t = sample_tree();
        t.checkpoints[1].name = "a\nb";
        expect_corrupt(t, "control character in name");
    }
    {
        auto t = sample_tree();
        t.checkpoints[1].parent = "deadbeef";
        expect_corrupt(t, "unknown parent");
    }
    {
        auto t = sample_tree();
        t.checkpoints[0].parent = "0000000c";
        expect_corrupt(t, "cycle");
    }
    {
        auto t = sample_tree();
        t.current = "deadbeef";
        expect_corrupt(t, "unknown current");
    }
    {
        auto t = sample_tree();
        t.checkpoints[2].disks[0].target = "vdb";
        expect_corrupt(t, "disk targets differ from active");
    }
    {
        auto t = sample_tree();
        t.checkpoints[2].disks.push_back({"vdb", "/x.qcow2"});
        expect_corrupt(t, "extra disk");
    }
}

TEST(CheckpointTree, FindsByNameOrIdAndListsNamesWhenMissing) {
    auto t = sample_tree();
    auto by_name = find_checkpoint(t, "b");
    ASSERT_TRUE(by_name);
    EXPECT_EQ((*by_name)->id, "0000000c");
    auto by_id = find_checkpoint(t, "0000000d");
    ASSERT_TRUE(by_id);
    EXPECT_EQ((*by_id)->name, "c");
    auto missing = find_checkpoint(t, "nope");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::not_found);
    const auto& m = missing.error().message();
    EXPECT_NE(m.find("VM 'web1'"), std::string::npos) << m;
    EXPECT_NE(m.find("'root', 'a', 'b', 'c'"), std::string::npos) << m;
}

TEST(CheckpointTree, ChildrenAndPathToNow) {
    auto t = sample_tree();
    auto kids = checkpoint_children(t, "0000000a");
    ASSERT_EQ(kids.size(), 2u);
    EXPECT_EQ(kids[0]->name, "a");
    EXPECT_EQ(kids[1]->name, "c");
    EXPECT_EQ(checkpoint_children(t, "").size(), 1u) << "the roots";
    auto path = checkpoint_path_to_current(t);
    ASSERT_EQ(path.size(), 3u);
    EXPECT_EQ(path[0]->name, "root");
    EXPECT_EQ(path[2]->name, "b");
    t.current.clear();
    EXPECT_TRUE(checkpoint_path_to_current(t).empty());
}

TEST(CheckpointTree, NewIdsAreFreshHex) {
    auto t = sample_tree();
    for (int i = 0; i < 200; ++i) {
        auto id = new_checkpoint_id(t);
        ASSERT_EQ(id.size(), 8u);
        EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
        EXPECT_FALSE(find_checkpoint(t, id)) << "not used yet: " << id;
        auto c = make_checkpoint(id, "n" + std::to_string(i), "");
        t.checkpoints.push_back(c);
    }
}

TEST(CheckpointTree, WarnsAboutDeepAndOldChains) {
    CheckpointTree t;
    t.vm_uuid = "u";
    t.vm_name = "web1";
    t.active = {{"vda", "/now.qcow2"}};
    const std::int64_t now = 100LL * 24 * 3600;
    EXPECT_TRUE(checkpoint_warnings(t, now).empty());
    std::string parent;
    for (int i = 0; i < kCheckpointWarnDepth; ++i) {
        char id[9];
        std::snprintf(id, sizeof id, "%08x", i + 1);
        t.checkpoints.push_back(make_checkpoint(id, "c" + std::to_string(i), parent, now - 60));
        parent = id;
    }
    t.current = parent;
    EXPECT_TRUE(checkpoint_warnings(t, now).empty()) << "8 deep is still fine";
    t.checkpoints.push_back(make_checkpoint("000000ff", "c9", parent, now - 60));
    t.current = "000000ff";
    auto deep = checkpoint_warnings(t, now);
    ASSERT_EQ(deep.size(), 1u);
    EXPECT_NE(deep[0].find("9 checkpoint layers"), std::string::npos) << deep[0];
    t.checkpoints[0].created = now - 31LL * 24 * 3600;
    auto old = checkpoint_warnings(t, now);
    ASSERT_EQ(old.size(), 2u);
    EXPECT_NE(old[1].find("'c0' is 31 days old"), std::string::npos) << old[1];
    EXPECT_NE(old[1].find("checkpoints are not backups"), std::string::npos);
}

}  // namespace
}  // namespace vmshadow::engine
