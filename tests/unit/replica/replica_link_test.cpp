// SPDX-License-Identifier: MIT
#include "replica/replica_link.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace vmshadow::replica {
namespace {

namespace fs = std::filesystem;

class TempDir {
  public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "vmshadow-link-XXXXXX").string();
        path_ = ::mkdtemp(pattern.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

  private:
    fs::path path_;
};

LinkRecord sample() {
    LinkRecord l;
    l.spec.vm = "web1";
    l.spec.to = "127.0.0.2:8471";
    l.spec.interval = std::chrono::seconds(30);
    l.spec.history = 7;
    l.spec.app_consistent_every_h = 4;
    l.spec.exclude_disks = {"vdb"};
    l.spec.bandwidth_mib = 50;
    l.spec.start_at = "2026-12-08T01:00:00Z";
    l.spec.initial = LinkSpec::Initial::offline;
    l.uuid = "6f1c2a4e-0b7d-4c1e-9a53-1f2e3d4c5b6a";
    l.chain_id = "0123456789abcdef";
    l.state = "normal";
    l.checkpoint = "vmshadow-01234567-20261207T083000.000Z";
    l.checkpoint_xml = "<domaincheckpoint><name>x</name></domaincheckpoint>";
    l.point_time = "2026-12-07T08:30:00Z";
    l.last_attempt = 1796632200;
    l.last_app_consistent = 1796630000;
    l.bytes_sent_total = 123456789;
    l.cycles_total = 12;
    CycleRecord c;
    c.started = Clock::time_point(std::chrono::seconds(1796632200));
    c.seconds = 2.5;
    c.bytes_sent = 4096;
    c.point_time = c.started;
    l.cycles.push_back(c);
    c.result = CycleRecord::Result::missed;
    c.point_time.reset();
    l.cycles.push_back(c);
    return l;
}

TEST(ReplicaLink, SavedLinkLoadsBackEqual) {
    TempDir dir;
    LinkRecord l = sample();
    auto file = link_path(dir.path(), l.uuid);
    ASSERT_TRUE(save_link(file, l));
    EXPECT_EQ(fs::status(file).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write);
    auto back = load_link(file);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(link_to_json(*back), link_to_json(l));
    EXPECT_EQ(back->spec.start_at, l.spec.start_at);
    ASSERT_EQ(back->cycles.size(), 2u);
    EXPECT_EQ(back->cycles[1].result, CycleRecord::Result::missed);
    EXPECT_EQ(back->cycles[0].point_time, l.cycles[0].point_time);
}

TEST(ReplicaLink, DamagedFileIsRefusedNamingIt) {
    TempDir dir;
    auto file = dir.path() / "x.json";
    std::ofstream(file) << "{\"version\": 1, \"vm\": \"web1\", \"uuid\": ";
    auto r = load_link(file);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::corruption);
    EXPECT_NE(r.error().message().find(file.string()), std::string::npos) << r.error().message();
}

TEST(ReplicaLink, WrongFieldsAreRefusedNamingTheField) {
    auto good = link_to_json(sample());
    struct Case {
        const char* field;
        nlohmann::json value;
    };
    for (const Case& c : {Case{"uuid", "not-a-uuid"}, Case{"interval_s", 60}, Case{"history", 25},
                          Case{"chain_id", "XYZ"}, Case{"state", "exploded"}, Case{"vm", 7},
                          Case{"bytes_sent_total", -1}, Case{"cycles", "many"}}) {
        auto j = good;
        j[c.field] = c.value;
        auto r = link_from_json(j, "link f.json");
        ASSERT_FALSE(r) << c.field;
        EXPECT_EQ(r.error().kind(), ErrorKind::corruption);
        EXPECT_NE(r.error().message().find(c.field), std::string::npos) << r.error().message();
    }
    auto j = good;
    j.erase("chain_id");
    EXPECT_FALSE(link_from_json(j, "f"));
    j = good;
    j["cycles"][0]["result"] = "maybe";
    EXPECT_FALSE(link_from_json(j, "f"));
}

TEST(ReplicaLink, NewerVersionIsUnsupportedNotMisread) {
    auto j = link_to_json(sample());
    j["version"] = 2;
    auto r = link_from_json(j, "f");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::unsupported);
    j.erase("version");
    EXPECT_EQ(link_from_json(j, "f").error().kind(), ErrorKind::corruption);
    EXPECT_FALSE(link_from_json(nlohmann::json::array(), "f"));
}

TEST(ReplicaLink, SaveReplacesTheWholeRecord) {
    TempDir dir;
    LinkRecord l = sample();
    auto file = link_path(dir.path(), l.uuid);
    ASSERT_TRUE(save_link(file, l));
    l.state = "paused";
    l.paused_from = "normal";
    ASSERT_TRUE(save_link(file, l));
    auto back = load_link(file);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->state, "paused");
    EXPECT_EQ(back->paused_from, "normal");
    // No temp file stays behind.
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++files;
    EXPECT_EQ(files, 1u);
}

}  // namespace
}  // namespace vmshadow::replica
