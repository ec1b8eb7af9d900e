// SPDX-License-Identifier: MIT
// `vmshadow checkpoint create|list|apply|rename` on real TCG lab guests with the SQLite
// workload: a production checkpoint applied holds exactly the rows committed before it and a
// sound database; a standard one applied resumes the running workload where it was; a guest
// without an agent gets a standard checkpoint only with --fallback-standard; a tree of
// checkpoints of a shut-off VM, with "Now" where it is; and failures leave the VM running on
// its disks with no overlay behind.
#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <thread>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;
using lab::AgentMode;
using lab::GuestOptions;

class CheckpointTest : public ::testing::Test {
  protected:
    void SetUp() override {
        fs::create_directories(lab::run_dir());
        std::string tmpl = (lab::run_dir() / "checkpoint-test-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        dir = tmpl;
        // The vmshadow processes the test runs inherit it: the records stay in the test's dir.
        ::setenv("VMSHADOW_CHECKPOINT_DIR", (dir / "checkpoints").c_str(), 1);
    }
    void TearDown() override {
        guests.clear();  // domains first: their overlays are in their own dirs
        ::unsetenv("VMSHADOW_CHECKPOINT_DIR");
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    lab::LabGuest& make(const GuestOptions& options, bool start) {
        auto guest = lab::LabGuest::create(options, current_test_name());
        if (!guest) throw std::runtime_error("create: " + guest.error().message());
        guests.push_back(std::move(*guest));
        lab::LabGuest& g = guests.back();
        if (!start) return g;
        if (auto s = g.start(); !s) throw std::runtime_error(s.error().message());
        auto s =
            options.agent == AgentMode::on ? g.wait_for_agent() : g.wait_for_serial("lab: ready");
        if (!s) throw std::runtime_error(s.error().message());
        return g;
    }

    // `vmshadow checkpoint ARGS... --json`, which must succeed.
    json checkpoint_ok(std::vector<std::string> args) {
        args.insert(args.begin(), "checkpoint");
        args.push_back("--json");
        auto out = run_vmshadow(args);
        EXPECT_EQ(out.exit_code, 0) << out.out << out.err;
        auto j = json::parse(out.out, nullptr, false);
        if (j.is_discarded()) throw std::runtime_error("no JSON: " + out.out + out.err);
        return j;
    }
    json tree_of(const lab::LabGuest& g) { return checkpoint_ok({"list", g.name()}); }

    static std::string state_of(const lab::LabGuest& g) {
        auto s = g.domain().state();
        return s ? std::string(virt::state_name(*s)) : "unknown";
    }
    // The images the VM's vda uses now, per libvirt.
    static std::string vda_source(const lab::LabGuest& g) {
        auto xml = g.domain().xml();
        auto desc = xml ? virt::parse_domain_xml(*xml)
                        : Result<virt::DomainDescription>(fail(ErrorKind::internal, "no xml"));
        if (!desc) return "";
        for (const auto& d : desc->disks)
            if (d.target == "vda") return d.path;
        return "";
    }
    // Overlay files vmshadow made in the guest's folder.
    static std::set<std::string> overlays_in(const lab::LabGuest& g) {
        std::set<std::string> out;
        for (const auto& e : fs::directory_iterator(g.dir()))
            if (e.path().filename().string().find(".now-") != std::string::npos)
                out.insert(e.path().string());
        return out;
    }
    // Every image the record names (checkpoint layers and "now").
    static std::set<std::string> recorded_images(const json& tree) {
        std::set<std::string> out;
        for (const auto& d : tree["now"]["disks"]) out.insert(d["image"]);
        for (const auto& c : tree["checkpoints"])
            for (const auto& d : c["disks"]) out.insert(d["image"]);
        return out;
    }

    std::int64_t wait_for_row_past(lab::LabGuest& g, std::int64_t row) {
        auto committed = g.last_committed_row();
        for (int i = 0; i < 60 && (!committed || *committed <= row); ++i) {
            std::this_thread::sleep_for(1s);
            committed = g.last_committed_row();
        }
        if (!committed) throw std::runtime_error(committed.error().message());
        return *committed;
    }

    fs::path dir;
    std::list<lab::LabGuest> guests;
};

// The last "paused N" of the workload's event log: its last row before the freeze.
std::int64_t last_paused_row(lab::LabGuest& g) {
    auto events = g.read_file("/run/lab/events");
    if (!events) throw std::runtime_error(events.error().message());
    std::int64_t row = -1;
    for (std::size_t pos = 0; (pos = events->find("paused ", pos)) != std::string::npos; pos += 7)
        row = std::stoll(events->substr(pos + 7));
    return row;
}

TEST_F(CheckpointTest, ProductionCheckpointAppliedHoldsExactlyTheRowsCommittedBeforeIt) {
    GuestOptions o;
    o.workload = true;
    lab::LabGuest& g = make(o, true);
    std::this_thread::sleep_for(2s);  // some rows committed
    const std::string original = vda_source(g);
    json made = checkpoint_ok({"create", g.name(), "before"});
    EXPECT_EQ(made["type"], "production") << made.dump(2);
    EXPECT_EQ(made["consistency"], "application");
    ASSERT_EQ(made["disks"][0]["image"], original) << "the image it wrote to is the layer";
    EXPECT_NE(vda_source(g), original) << "the VM goes on on an overlay";
    EXPECT_EQ(state_of(g), "running");
    const std::int64_t frozen_at = last_paused_row(g);
    ASSERT_GT(frozen_at, 0);
    wait_for_row_past(g, frozen_at + 4);  // more writes after the checkpoint

    json tree = tree_of(g);
    EXPECT_EQ(tree["current"], made["id"]);
    const std::string left_behind = tree["now"]["disks"][0]["image"];
    auto plain = run_vmshadow({"checkpoint", "apply", g.name(), "before"});
    EXPECT_NE(plain.exit_code, 0) << "no terminal, no --yes: refused";
    EXPECT_NE(plain.err.find("--yes"), std::string::npos) << plain.err;
    EXPECT_NE(plain.err.find("discards"), std::string::npos) << plain.err;
    EXPECT_EQ(state_of(g), "running") << "nothing changed";

    json applied = checkpoint_ok({"apply", g.name(), "before", "--yes"});
    EXPECT_EQ(applied["running"], false) << applied.dump(2);
    EXPECT_EQ(state_of(g), "shutoff");
    EXPECT_FALSE(fs::exists(left_behind)) << "the state it left is discarded";
    tree = tree_of(g);
    EXPECT_EQ(tree["current"], made["id"]);
    EXPECT_EQ(
        tree["tracking_reset_reason"].get<std::string>().find("returned to checkpoint 'before'"),
        0u);
    EXPECT_EQ(overlays_in(g), [&] {
        std::set<std::string> s;
        for (const auto& i : recorded_images(tree))
            if (i != original) s.insert(i);
        return s;
    }()) << "no overlay behind but the one the VM is on";

    // The disk the VM is on now: exactly the rows committed before the checkpoint, sound.
    const std::string now = tree["now"]["disks"][0]["image"];
    ASSERT_EQ(vda_source(g), now);
    auto db = lab::read_file_from_image(now, "/var/lib/lab/db.sqlite");
    ASSERT_TRUE(db) << db.error().message();
    fs::path db_file = dir / "db.sqlite";
    std::ofstream(db_file) << *db;
    auto check = lab::run_checked({"sqlite3", db_file.string(), "PRAGMA integrity_check;"});
    ASSERT_TRUE(check) << check.error().message();
    EXPECT_EQ(*check, "ok\n");
    auto rows = lab::sqlite_max_row(db_file);
    ASSERT_TRUE(rows) << rows.error().message();
    EXPECT_EQ(*rows, frozen_at) << "exactly the rows committed before the checkpoint";

    // It boots from it like after a clean shutdown, and the workload goes on from there.
    ASSERT_TRUE(g.start());
    ASSERT_TRUE(g.wait_for_agent());
    EXPECT_GT(wait_for_row_past(g, frozen_at), frozen_at);
}

TEST_F(CheckpointTest, StandardCheckpointAppliedResumesTheRunningWorkload) {
    GuestOptions o;
    o.workload = true;
    lab::LabGuest& g = make(o, true);
    std::this_thread::sleep_for(2s);
    json made = checkpoint_ok({"create", g.name(), "running", "--type", "standard"});
    EXPECT_EQ(made["type"], "standard") << made.dump(2);
    EXPECT_EQ(made["consistency"], "running-state");
    EXPECT_TRUE(fs::exists(made["memory_file"].get<std::string>()));
    EXPECT_EQ(state_of(g), "running");
    auto at_checkpoint = g.last_committed_row();
    ASSERT_TRUE(at_checkpoint) << at_checkpoint.error().message();
    const std::int64_t later = wait_for_row_past(g, *at_checkpoint + 20);

    json applied = checkpoint_ok({"apply", g.name(), "running", "--yes"});
    EXPECT_EQ(applied["running"], true) << applied.dump(2);
    EXPECT_EQ(state_of(g), "running");
    // Resumed where it was: the workload's own memory says so (its tmpfs counter is back
    // near the checkpoint's), and it keeps committing on from there.
    auto resumed = g.last_committed_row();
    ASSERT_TRUE(resumed) << resumed.error().message();
    EXPECT_LT(*resumed, later) << "the rows after the checkpoint are gone";
    EXPECT_GE(*resumed, *at_checkpoint - 8);
    EXPECT_GT(wait_for_row_past(g, *resumed), *resumed) << "the workload runs on";
    auto check = g.exec(
        "sqlite3 /var/lib/lab/db.sqlite 'PRAGMA integrity_check; SELECT count(*) = max(id) FROM "
        "rows;'",
        60s);
    ASSERT_TRUE(check) << check.error().message();
    EXPECT_EQ(*check, "ok\n1\n") << "sound, and no row lost or doubled";
    // Applied twice: the memory image stays with its checkpoint.
    json again = checkpoint_ok({"apply", g.name(), "running", "--yes"});
    EXPECT_EQ(again["running"], true);
    ASSERT_TRUE(g.wait_for_agent(60s));
}

TEST_F(CheckpointTest, GuestWithoutAgentGetsAStandardCheckpointOnlyWhenAllowed) {
    GuestOptions o;
    o.agent = AgentMode::off;
    lab::LabGuest& g = make(o, true);
    const std::string original = vda_source(g);
    auto refused = run_vmshadow({"checkpoint", "create", g.name(), "first"});
    EXPECT_NE(refused.exit_code, 0);
    EXPECT_NE(refused.err.find("--fallback-standard"), std::string::npos) << refused.err;
    EXPECT_EQ(state_of(g), "running") << "failure leaves the VM running";
    EXPECT_EQ(vda_source(g), original) << "on its own disk";
    EXPECT_TRUE(overlays_in(g).empty()) << "no overlay behind";
    EXPECT_TRUE(tree_of(g)["checkpoints"].empty());

    json made = checkpoint_ok({"create", g.name(), "first", "--fallback-standard"});
    EXPECT_EQ(made["type"], "standard") << made.dump(2);
    EXPECT_EQ(made["consistency"], "running-state");
    EXPECT_NE(made["note"].get<std::string>().find("instead of a production"), std::string::npos);
    EXPECT_EQ(state_of(g), "running");

    // A second checkpoint under a taken name: refused before anything is made.
    const auto before = overlays_in(g);
    const std::string source = vda_source(g);
    auto taken = run_vmshadow({"checkpoint", "create", g.name(), "first", "--type", "standard"});
    EXPECT_NE(taken.exit_code, 0);
    EXPECT_NE(taken.err.find("already"), std::string::npos) << taken.err;
    EXPECT_EQ(overlays_in(g), before);
    EXPECT_EQ(vda_source(g), source);
    EXPECT_EQ(state_of(g), "running");
}

TEST_F(CheckpointTest, ApplyThatCannotFinishLeavesTheVmRunningOnItsDisks) {
    lab::LabGuest& g = make(GuestOptions{}, true);
    json made = checkpoint_ok({"create", g.name(), "s", "--type", "standard"});
    const fs::path memory = made["memory_file"].get<std::string>();
    const std::string now = vda_source(g);
    const auto overlays = overlays_in(g);
    auto unchanged = [&](const std::string& why) {
        EXPECT_EQ(state_of(g), "running") << why;
        EXPECT_EQ(vda_source(g), now) << why;
        EXPECT_EQ(overlays_in(g), overlays) << why << ": no overlay behind";
        json tree = tree_of(g);
        EXPECT_EQ(tree["now"]["disks"][0]["image"], now) << why;
        EXPECT_FALSE(tree.contains("tracking_reset_at")) << why;
    };

    // Damaged past its header: found out only when restoring, after the VM was turned off.
    fs::resize_file(memory, 1 << 20);
    auto late = run_vmshadow({"checkpoint", "apply", g.name(), "s", "--yes"});
    EXPECT_NE(late.exit_code, 0) << late.out;
    EXPECT_NE(late.err.find("back on its disks"), std::string::npos) << late.err;
    unchanged("a restore that failed");
    ASSERT_TRUE(g.wait_for_agent()) << "it boots from the disks it had";

    // Unreadable from the start: refused before the VM is touched.
    fs::resize_file(memory, 0);
    auto early = run_vmshadow({"checkpoint", "apply", g.name(), "s", "--yes"});
    EXPECT_NE(early.exit_code, 0) << early.out;
    EXPECT_NE(early.err.find("memory image cannot be read"), std::string::npos) << early.err;
    unchanged("a memory image that cannot be read");
}

TEST_F(CheckpointTest, TreeOfAShutOffVmShowsNowWhereItIsAndRenames) {
    lab::LabGuest& g = make(GuestOptions{}, false);
    json a = checkpoint_ok({"create", g.name(), "a"});
    EXPECT_EQ(a["consistency"], "shut off");
    json b = checkpoint_ok({"create", g.name(), "b"});
    EXPECT_EQ(b["parent"], a["id"]);
    json applied = checkpoint_ok({"apply", g.name(), "a", "--yes"});
    EXPECT_EQ(applied["running"], false);
    json c = checkpoint_ok({"create", g.name(), "c", "--type", "standard"});
    EXPECT_EQ(c["type"], "production") << "no memory to save on a VM that is off";
    EXPECT_EQ(c["parent"], a["id"]);
    json unnamed = checkpoint_ok({"create", g.name()});
    EXPECT_EQ(unnamed["name"].get<std::string>().rfind(g.name() + " - (", 0), 0u) << unnamed;
    EXPECT_TRUE(checkpoint_ok({"rename", g.name(), unnamed["name"], "d"}).is_object());
    auto clash = run_vmshadow({"checkpoint", "rename", g.name(), "d", "a"});
    EXPECT_NE(clash.exit_code, 0);

    auto text = run_vmshadow({"checkpoint", "list", g.name()});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    const std::string expected_shape = g.name() + "\n└─ a  (production, ";
    EXPECT_EQ(text.out.rfind(expected_shape, 0), 0u) << text.out;
    // a has b and c; c has d; "Now" is under d.
    auto line_of = [&](const std::string& needle) { return text.out.find(needle); };
    EXPECT_LT(line_of("├─ b  ("), line_of("└─ c  (")) << text.out;
    EXPECT_LT(line_of("└─ c  ("), line_of("└─ d  (")) << text.out;
    EXPECT_LT(line_of("└─ d  ("), line_of("└─ Now")) << text.out;

    json tree = tree_of(g);
    EXPECT_EQ(tree["checkpoints"].size(), 4u);
    EXPECT_NE(tree["tracking_reset_reason"].get<std::string>().find("while the VM was off"),
              std::string::npos)
        << "an offline overlay tracks no changes: the next backup must be full";
    EXPECT_EQ(vda_source(g), tree["now"]["disks"][0]["image"]);
    // Every overlay made is in the record (b's layer too), and the VM boots on the last one.
    std::set<std::string> recorded;
    for (const auto& i : recorded_images(tree))
        if (i.find(".now-") != std::string::npos) recorded.insert(i);
    EXPECT_EQ(overlays_in(g), recorded);
    json applied_b = checkpoint_ok({"apply", g.name(), "b", "--yes", "--start"});
    EXPECT_EQ(applied_b["running"], true);
    EXPECT_TRUE(g.wait_for_agent());
}

}  // namespace
}  // namespace vmshadow::testing
