// SPDX-License-Identifier: MIT
// The shadow record (engine/shadow_record.h): its JSON round trip, hostile files, ids, the
// folder listing, and the watcher's drop point (engine/shadow_ops.h).
#include "engine/shadow_record.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "engine/shadow_ops.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

ShadowRecord sample(const std::string& id, std::int64_t created) {
    ShadowRecord r;
    r.id = id;
    r.vm = "web1";
    r.uuid = "76598cb8-e6b1-41d8-bab3-6e395d824699";
    r.connect_uri = "qemu:///system";
    r.disks = {{"vda", "vda", 1ull << 30, "/var/tmp/vmshadow-shadow-" + id + "-vda.qcow2"}};
    r.created = created;
    r.consistency = "application";
    r.consistency_reason = "the guest agent froze 2 filesystem(s)";
    r.max_size = 64ull << 20;
    r.socket = "/var/lib/vmshadow/shadows/vmshadow-shadow-" + id + "/nbd.sock";
    r.watcher = {1234, "5678"};
    r.mounts = {{"vda", "/mnt/s/vda", "/x/fuse-vda", {99, "100"}}};
    return r;
}

class ShadowDirTest : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "shadow-record-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        dir = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    fs::path dir;
};

TEST(ShadowRecord, JsonRoundTripKeepsEveryField) {
    ShadowRecord r = sample("0a1b2c3d", 1700000000);
    r.state = "dropped";
    r.dropped_why = "the diff area reached its maximum of 64.0 MiB";
    r.dropped_at = 1700000100;
    auto back = parse_shadow_record(shadow_record_json(r), "test");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->id, r.id);
    EXPECT_EQ(back->vm, r.vm);
    EXPECT_EQ(back->disks.size(), 1u);
    EXPECT_EQ(back->disks[0].scratch, r.disks[0].scratch);
    EXPECT_EQ(back->watcher.pid, 1234);
    EXPECT_EQ(back->watcher.start_time, "5678");
    EXPECT_EQ(back->mounts[0].nbdfuse.pid, 99);
    EXPECT_FALSE(back->active());
    EXPECT_EQ(back->dropped_why, r.dropped_why);
    EXPECT_EQ(back->nbd_uri(back->disks[0]),
              "nbd+unix:///vda?socket=/var/lib/vmshadow/shadows/vmshadow-shadow-0a1b2c3d/nbd.sock");
}

TEST(ShadowRecord, HostileFilesAreCorruptionNotGuesses) {
    for (const std::string text : {"", "[]", "{\"id\":1}",
                                   "{\"id\":\"../../etc\",\"vm\":\"a\","
                                   "\"uuid\":\"u\",\"socket\":\"s\","
                                   "\"disks\":[]}",
                                   "{\"id\":\"0a1b2c3d\",\"vm\":\"a\",\"uuid\":\"u\"}"}) {
        auto r = parse_shadow_record(text, "f.json");
        ASSERT_FALSE(r) << text;
        EXPECT_EQ(r.error().kind(), ErrorKind::corruption) << text;
    }
}

TEST(ShadowRecord, IdsAreEightLowerCaseHexDigits) {
    EXPECT_TRUE(valid_shadow_id("0a1b2c3d"));
    EXPECT_FALSE(valid_shadow_id("0A1B2C3D"));
    EXPECT_FALSE(valid_shadow_id("0a1b2c3"));
    EXPECT_FALSE(valid_shadow_id("../a1b2c"));
    EXPECT_TRUE(valid_shadow_id(new_shadow_id()));
}

TEST_F(ShadowDirTest, ListingIsOldestFirstAndNamesBadRecords) {
    ASSERT_TRUE(save_shadow(dir, sample("bbbbbbbb", 200)));
    ASSERT_TRUE(save_shadow(dir, sample("aaaaaaaa", 300)));
    ASSERT_TRUE(save_shadow(dir, sample("cccccccc", 100)));
    std::ofstream(dir / "dddddddd.json") << "{not json";
    std::ofstream(dir / "notes.json") << "{}";
    std::vector<std::string> bad;
    auto all = load_shadows(dir, &bad);
    ASSERT_TRUE(all) << all.error().message();
    ASSERT_EQ(all->size(), 3u);
    EXPECT_EQ((*all)[0].id, "cccccccc");
    EXPECT_EQ((*all)[2].id, "aaaaaaaa");
    ASSERT_EQ(bad.size(), 1u);
    EXPECT_NE(bad[0].find("dddddddd.json"), std::string::npos) << bad[0];
    ASSERT_TRUE(remove_shadow_record(dir, "aaaaaaaa"));
    auto gone = load_shadow(dir, "aaaaaaaa");
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().kind(), ErrorKind::not_found);
    EXPECT_NE(gone.error().message().find("shadow list"), std::string::npos);
}

TEST_F(ShadowDirTest, AnIdThatIsNoIdNeverReachesAPath) {
    auto r = load_shadow(dir, "../../etc/passwd");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::invalid_argument);
}

TEST_F(ShadowDirTest, TheFolderLockIsExclusiveBetweenOpenFiles) {
    auto first = ShadowDirLock::acquire(dir);
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_TRUE(fs::exists(dir / ".lock"));
}

TEST(ShadowRecord, DroppedRecordExpiresAWeekAfterItsDrop) {
    constexpr std::int64_t kDay = 24 * 3600;
    ShadowRecord r = sample("0a1b2c3d", 1000);
    EXPECT_FALSE(dropped_shadow_expired(r, 1000 + 30 * kDay)) << "active: never";
    r.state = "dropped";
    r.dropped_at = 1000 + kDay;
    EXPECT_FALSE(dropped_shadow_expired(r, r.dropped_at + 7 * kDay)) << "a week to read why";
    EXPECT_TRUE(dropped_shadow_expired(r, r.dropped_at + 7 * kDay + 1));
    r.dropped_at = 0;  // no drop time: counted from its creation
    EXPECT_TRUE(dropped_shadow_expired(r, 1000 + 7 * kDay + 1));
    EXPECT_FALSE(dropped_shadow_expired(r, 1000 + 7 * kDay));
}

// Dropped records only (an active one would be looked up in libvirt), no watcher, no mount.
TEST_F(ShadowDirTest, SweepRemovesDroppedRecordsOlderThanAWeekWithWhatTheyLeft) {
    constexpr std::int64_t kNow = 1800000000, kDay = 24 * 3600;
    auto dropped = [&](const std::string& id, std::int64_t at) {
        ShadowRecord r = sample(id, at - kDay);
        r.state = "dropped";
        r.dropped_at = at;
        r.dropped_why = "the diff area reached its maximum of 64.0 MiB";
        r.watcher = {};
        r.mounts.clear();
        r.disks[0].scratch = (dir / ("scratch-" + id + ".qcow2")).string();
        std::ofstream(r.disks[0].scratch) << "diff";
        return r;
    };
    const ShadowRecord old = dropped("0000000a", kNow - 8 * kDay);
    const ShadowRecord recent = dropped("0000000b", kNow - 6 * kDay);
    ASSERT_TRUE(save_shadow(dir, old));
    ASSERT_TRUE(save_shadow(dir, recent));
    fs::create_directories(dir / "vmshadow-shadow-0000000a");

    ShadowSettings settings;
    settings.shadow_dir = dir;
    auto notes = sweep_shadows(settings, kNow);
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_NE(notes[0].find("shadow 0000000a of vm 'web1'"), std::string::npos) << notes[0];
    EXPECT_NE(notes[0].find("dropped more than 7 days ago"), std::string::npos) << notes[0];
    EXPECT_NE(notes[0].find("maximum of 64.0 MiB"), std::string::npos) << notes[0];
    auto left = load_shadows(dir);
    ASSERT_TRUE(left) << left.error().message();
    ASSERT_EQ(left->size(), 1u);
    EXPECT_EQ((*left)[0].id, "0000000b") << "dropped 6 days ago: kept";
    EXPECT_FALSE(fs::exists(old.disks[0].scratch));
    EXPECT_FALSE(fs::exists(dir / "vmshadow-shadow-0000000a"));
    EXPECT_TRUE(fs::exists(recent.disks[0].scratch));
}

TEST(ShadowDropPoint, LeavesAQuarterOfTheMaximumAtMost512MiB) {
    EXPECT_EQ(shadow_drop_point(64ull << 20), 48ull << 20);
    EXPECT_EQ(shadow_drop_point(100ull << 30), (100ull << 30) - (512ull << 20));
    EXPECT_LT(shadow_drop_point(1ull << 20), 1ull << 20);
}

TEST(ShadowCopy, ProgressFileSitsBesideTheCopy) {
    EXPECT_EQ(copy_progress_path("/backups/vda.qcow2"),
              fs::path("/backups/vda.qcow2.vmshadow-copy"));
}

}  // namespace
}  // namespace vmshadow::engine
