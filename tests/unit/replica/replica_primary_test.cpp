// SPDX-License-Identifier: MIT
// ReplicaPrimary's links without a VM or a peer: which links are due when, pause and resume,
// missed cycles in the status, a damaged link file left out, release.
#include "replica/replica_primary.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "replica/replica_link.h"

namespace vmshadow::replica {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

constexpr const char* kUuid = "6f1c2a4e-0b7d-4c1e-9a53-1f2e3d4c5b6a";
constexpr const char* kUuid2 = "7f1c2a4e-0b7d-4c1e-9a53-1f2e3d4c5b6a";
const Clock::time_point kStart{seconds(1796632200)};  // 2026-12-07T08:30:00Z

class ReplicaPrimaryLinks : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string pattern = (fs::temp_directory_path() / "vmshadow-primary-XXXXXX").string();
        dir_ = ::mkdtemp(pattern.data());
        fs::create_directories(dir_ / "replica");
    }
    void TearDown() override {
        primary_.reset();
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    LinkRecord link(const char* uuid, const char* vm, const char* state) {
        LinkRecord l;
        l.spec.vm = vm;
        l.spec.to = "127.0.0.2:8471";
        l.spec.interval = seconds(30);
        l.uuid = uuid;
        l.chain_id = "0123456789abcdef";
        l.state = state;
        return l;
    }
    void write(const LinkRecord& l) {
        ASSERT_TRUE(save_link(link_path(dir_ / "replica", l.uuid), l));
    }
    void open() {
        ReplicaPrimaryOptions o;
        o.state_dir = dir_;
        o.clock = &clock_;
        o.connect_uri = "test:///default";
        auto p = ReplicaPrimary::open(std::move(o));
        ASSERT_TRUE(p) << p.error().message();
        primary_ = std::move(*p);
    }
    nlohmann::json status(const std::string& vm) {
        const auto list = primary_->list();
        for (const auto& r : list["replicas"])
            if (r["vm"] == vm) return r;
        return nullptr;
    }

    fs::path dir_;
    ManualClock clock_{kStart};
    std::unique_ptr<ReplicaPrimary> primary_;
};

TEST_F(ReplicaPrimaryLinks, DueAfterTheIntervalSinceTheLastAttempt) {
    auto l = link(kUuid, "web1", "normal");
    l.last_attempt = unix_seconds(kStart) - 10;
    write(l);
    auto never = link(kUuid2, "db1", "initial");
    write(never);
    open();
    EXPECT_EQ(primary_->due(kStart), std::vector<std::string>{"db1"});
    auto later = kStart + seconds(20);
    EXPECT_EQ(primary_->due(later), (std::vector<std::string>{"db1", "web1"}));  // oldest first
}

TEST_F(ReplicaPrimaryLinks, PausedFailedOverAndOfflineInitialAreNotDue) {
    write(link(kUuid, "web1", "failed-over"));
    auto offline = link(kUuid2, "db1", "initial");
    offline.spec.initial = LinkSpec::Initial::offline;
    write(offline);
    open();
    EXPECT_TRUE(primary_->due(kStart).empty());
    ASSERT_TRUE(primary_->pause("db1"));
    EXPECT_EQ(status("db1")["state"], "paused");
    EXPECT_FALSE(primary_->pause("web1"));  // failed over: nothing to pause
    EXPECT_EQ(primary_->pause("nosuch").error().kind(), ErrorKind::not_found);
}

TEST_F(ReplicaPrimaryLinks, PauseAndResumeSurviveARestart) {
    write(link(kUuid, "web1", "resync-required"));
    open();
    ASSERT_TRUE(primary_->pause("web1"));
    EXPECT_TRUE(primary_->due(kStart + seconds(3600)).empty());
    primary_.reset();
    open();
    EXPECT_EQ(status("web1")["state"], "paused");
    ASSERT_TRUE(primary_->resume(kUuid));  // by uuid too
    EXPECT_EQ(status("web1")["state"], "resync-required");
    EXPECT_EQ(primary_->due(kStart), std::vector<std::string>{"web1"});
}

TEST_F(ReplicaPrimaryLinks, StartAtDelaysTheFirstCycle) {
    auto l = link(kUuid, "web1", "initial");
    l.spec.start_at = "2026-12-07T09:00:00Z";
    write(l);
    open();
    EXPECT_TRUE(primary_->due(kStart).empty());
    EXPECT_EQ(status("web1")["next_cycle"], "2026-12-07T09:00:00Z");
    EXPECT_EQ(primary_->due(kStart + seconds(1800)), std::vector<std::string>{"web1"});
}

TEST_F(ReplicaPrimaryLinks, ACycleCutOffByTheDaemonsDeathIsAFailureAfterTheRestart) {
    auto l = link(kUuid, "web1", "normal");
    CycleRecord ok;
    ok.started = kStart - seconds(60);
    ok.seconds = 5;
    ok.point_time = kStart - seconds(60);
    l.cycles.push_back(ok);
    l.last_attempt = unix_seconds(kStart) - 20;
    l.cycle_running = l.last_attempt;  // as a daemon killed during that cycle left it
    write(l);
    open();
    auto s = status("web1");
    EXPECT_EQ(s["state"], "warning") << s.dump();
    EXPECT_NE(s["last_error"].get<std::string>().find("cut off"), std::string::npos) << s.dump();
    // Recorded once: the saved link no longer says a cycle runs.
    auto saved = load_link(link_path(dir_ / "replica", kUuid));
    ASSERT_TRUE(saved) << saved.error().message();
    EXPECT_FALSE(saved->cycle_running);
    EXPECT_EQ(saved->cycles.size(), 2u);
}

TEST_F(ReplicaPrimaryLinks, MissedCyclesShowInTheStatus) {
    auto l = link(kUuid, "web1", "normal");
    l.last_attempt = unix_seconds(kStart);
    write(l);
    open();
    for (int i = 0; i < 3; ++i) {
        clock_.advance(seconds(30));
        primary_->note_missed("web1");
    }
    auto s = status("web1");
    EXPECT_EQ(s["missed_cycles"], 3);
    EXPECT_EQ(s["role"], "primary");
    EXPECT_EQ(s["peer"], "127.0.0.2:8471");
    EXPECT_EQ(s["interval_s"], 30);
    EXPECT_NE(s["state"], "normal");  // every cycle of the last hour missed
    // Kept in the link.
    primary_.reset();
    open();
    EXPECT_EQ(status("web1")["missed_cycles"], 3);
}

TEST_F(ReplicaPrimaryLinks, DamagedLinkFileIsLeftOutNotFatal) {
    write(link(kUuid, "web1", "normal"));
    std::ofstream(dir_ / "replica" / (std::string(kUuid2) + ".json")) << "{not json";
    open();
    EXPECT_EQ(primary_->list()["replicas"].size(), 1u);
}

TEST_F(ReplicaPrimaryLinks, ResyncRequestMarksTheLink) {
    write(link(kUuid, "web1", "normal"));
    open();
    ASSERT_TRUE(primary_->request_resync("web1"));
    EXPECT_EQ(status("web1")["state"], "resync-required");
    auto back = load_link(link_path(dir_ / "replica", kUuid));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->state, "resync-required");
}

TEST_F(ReplicaPrimaryLinks, ReleaseDropsTheLinkAndItsFile) {
    write(link(kUuid, "web1", "failed-over"));
    open();
    ASSERT_TRUE(primary_->release(kUuid));
    EXPECT_TRUE(primary_->list()["replicas"].empty());
    EXPECT_FALSE(fs::exists(link_path(dir_ / "replica", kUuid)));
    EXPECT_TRUE(primary_->release(kUuid));  // nothing left: fine
    // Its settings are kept aside for a later reverse, not listed and never due.
    auto kept = load_link(link_path(dir_ / "replica" / "released", kUuid));
    ASSERT_TRUE(kept) << kept.error().message();
    EXPECT_EQ(kept->spec.interval, seconds(30));
    primary_.reset();
    open();
    EXPECT_TRUE(primary_->list()["replicas"].empty());
}

}  // namespace
}  // namespace vmshadow::replica
