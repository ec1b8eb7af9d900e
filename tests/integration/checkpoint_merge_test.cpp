// SPDX-License-Identifier: MIT
// Deleting checkpoints, and checkpoints together with backups, on real guests: a middle
// checkpoint merged while the guest writes leaves the others' content unchanged; backups
// across checkpoint create / delete restore the guest's disk; an apply makes the next backup
// full and says why; --subtree; a delete killed part-way is finished by running it again (and
// its checkpoint cannot be applied meanwhile); a restore in place, and an instant recovery in
// place, forget the VM's checkpoints.
#include <signal.h>
#include <stdlib.h>

#include <iostream>
#include <thread>

#include "engine/checkpoint_tree.h"
#include "engine/vm_changes.h"
#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

// A checkpoint folder per test ($VMSHADOW_CHECKPOINT_DIR, which the vmshadow processes the
// test starts inherit), removed with the test's folder.
class CheckpointMergeTest : public VmBackupTest {
  protected:
    void SetUp() override {
        // As vmshadow does: a production checkpoint's thaw guardian is told over a pipe that
        // may be closed already (a broken pipe is an error value, not a signal).
        ::signal(SIGPIPE, SIG_IGN);
        VmBackupTest::SetUp();
        ::setenv("VMSHADOW_CHECKPOINT_DIR", (dir / "checkpoints").c_str(), 1);
    }
    void TearDown() override {
        VmBackupTest::TearDown();
        ::unsetenv("VMSHADOW_CHECKPOINT_DIR");
    }

    // The real binary (a production checkpoint's thaw guardian is the vmshadow binary).
    void vmshadow_ok(const std::vector<std::string>& args) {
        auto out = run_vmshadow(args);
        if (out.exit_code != 0)
            throw std::runtime_error("vmshadow " + args[0] + " " + args[1] + ": " + out.out +
                                     out.err);
    }
    void create(const lab::LabGuest& g, const std::string& name) {
        vmshadow_ok({"checkpoint", "create", g.name(), name});
    }
    void apply(const lab::LabGuest& g, const std::string& name) {
        vmshadow_ok({"checkpoint", "apply", g.name(), name, "--start", "--yes"});
    }
    void delete_checkpoint(const lab::LabGuest& g, const std::string& name, bool subtree) {
        std::vector<std::string> args{"checkpoint", "delete", g.name(), name};
        if (subtree) args.push_back("--subtree");
        auto out = run_vmshadow(args);
        if (out.exit_code != 0)
            throw std::runtime_error("vmshadow checkpoint delete: " + out.out + out.err);
        std::cout << out.out << out.err;  // the merges made, for the test's log
    }

    engine::CheckpointTree tree(const lab::LabGuest& g) {
        auto t = engine::load_checkpoint_tree(g.domain().uuid());
        if (!t) throw std::runtime_error(t.error().message());
        return *t;
    }

    static std::string active_of(const engine::CheckpointTree& t, const std::string& target) {
        for (const auto& d : t.active)
            if (d.target == target) return d.image;
        throw std::runtime_error("no active disk " + target);
    }

    static std::string image_of(const engine::CheckpointTree& t, const std::string& name,
                                const std::string& target) {
        auto c = engine::find_checkpoint(t, name);
        if (!c) throw std::runtime_error(c.error().message());
        for (const auto& d : (*c)->disks)
            if (d.target == target) return d.image;
        throw std::runtime_error("no disk " + target);
    }

    // A standalone copy of what `image` reads through its chain (the checkpoint's content).
    fs::path flatten(const std::string& image, const std::string& as) {
        fs::path out = dir / (as + ".qcow2");
        auto r =
            lab::run_checked({"qemu-img", "convert", "-U", "-O", "qcow2", image, out.string()});
        if (!r) throw std::runtime_error(r.error().message());
        return out;
    }

    static bool same_content(const fs::path& a, const std::string& b, std::string* why) {
        auto r = lab::run_process({"qemu-img", "compare", "-U", a.string(), b});
        if (r && r->exit_code == 0) return true;
        if (why) *why = r ? r->out + r->err : r.error().message();
        return false;
    }

    static bool wait_shut_off(const lab::LabGuest& g) {
        for (auto end = std::chrono::steady_clock::now() + 120s;
             std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(500ms)) {
            auto st = g.domain().state();
            if (st && *st == virt::DomainState::shutoff) return true;
        }
        return false;
    }

    void wait_rows(lab::LabGuest& g, std::int64_t more) {
        auto start = g.last_committed_row();
        ASSERT_TRUE(start) << start.error().message();
        for (auto end = std::chrono::steady_clock::now() + 60s;
             std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(250ms)) {
            auto now = g.last_committed_row();
            if (now && *now >= *start + more) return;
        }
        FAIL() << "the workload did not commit " << more << " rows in 60 s";
    }
};

TEST_F(CheckpointMergeTest, MiddleOfThreeDeletedWhileTheGuestWritesLeavesTheOthersIntact) {
    lab::LabGuest& g = boot({.workload = true});
    create(g, "a");
    wait_rows(g, 4);
    create(g, "b");
    wait_rows(g, 4);
    create(g, "c");
    wait_rows(g, 4);
    auto before = tree(g);
    fs::path a = flatten(image_of(before, "a", "vda"), "a");
    fs::path c = flatten(image_of(before, "c", "vda"), "c");

    delete_checkpoint(g, "b", false);  // the guest keeps writing throughout

    auto after = tree(g);
    ASSERT_EQ(after.checkpoints.size(), 2u);
    EXPECT_FALSE(engine::find_checkpoint(after, "b"));
    EXPECT_EQ((*engine::find_checkpoint(after, "c"))->parent,
              (*engine::find_checkpoint(after, "a"))->id);
    std::string why;
    EXPECT_TRUE(same_content(a, image_of(after, "a", "vda"), &why)) << why;
    EXPECT_TRUE(same_content(c, image_of(after, "c", "vda"), &why)) << why;
    EXPECT_FALSE(fs::exists(image_of(before, "c", "vda"))) << "c's old layer merged away";
    auto state = g.domain().state();
    ASSERT_TRUE(state);
    EXPECT_EQ(*state, virt::DomainState::running);
    wait_rows(g, 2);  // still writing

    // The merged chain is the VM's: applying c boots it.
    apply(g, "c");
    ASSERT_TRUE(g.wait_for_agent());
    EXPECT_TRUE(same_content(c, image_of(tree(g), "c", "vda"), &why)) << why;
}

TEST_F(CheckpointMergeTest, BackupsAcrossCheckpointCreateAndDeleteRestoreTheDisk) {
    lab::LabGuest& g = boot({.data_disks = {{}}});
    backup_ok({g.name()});
    // A crash-consistent backup of the frozen guest, restored: equal to its disks now.
    auto backup_equals_disks = [&](const std::string& marker) {
        FrozenGuest frozen(g);
        json vm = backup_ok({g.name(), "--method", "crash"});
        for (const std::string disk : {"vda", "vdb"}) {
            if (mode_of(vm, disk) != "incremental") {
                EXPECT_FALSE(disk_of(vm, disk)->value("note", "").empty()) << vm.dump(2);
            }
            fs::path restored = restore_disk(vm["point"], disk);
            std::string why;
            EXPECT_TRUE(same_content(restored, active_of(tree(g), disk), &why))
                << disk << ": " << why << vm.dump(2);
            if (disk == "vdb") {
                EXPECT_EQ(file_on_image(restored, "/marker"), marker + "\n");
            }
            fs::remove(restored);
        }
        return vm;
    };
    create(g, "before-change");
    ASSERT_TRUE(g.exec("echo one > /data/vdb/marker && sync"));
    json second = backup_equals_disks("one");

    delete_checkpoint(g, "before-change", false);  // active commit + pivot
    ASSERT_TRUE(g.exec("echo two > /data/vdb/marker && sync"));
    json third = backup_equals_disks("two");
    RecordProperty("modes", mode_of(second, "vdb") + "," + mode_of(third, "vdb"));
    std::cout << "modes after create, after delete: " << mode_of(second, "vdb") << ", "
              << mode_of(third, "vdb") << std::endl;
}

TEST_F(CheckpointMergeTest, ApplyMakesTheNextBackupFullAndSaysWhy) {
    lab::LabGuest& g = boot({});
    backup_ok({g.name()});
    create(g, "base");
    apply(g, "base");
    ASSERT_TRUE(g.wait_for_agent());
    json after_apply = backup_ok({g.name()});
    EXPECT_EQ(mode_of(after_apply, "vda"), "full") << after_apply.dump(2);
    EXPECT_NE(disk_of(after_apply, "vda")->value("note", "").find("returned to checkpoint"),
              std::string::npos)
        << after_apply.dump(2);
    json next = backup_ok({g.name()});
    EXPECT_EQ(mode_of(next, "vda"), "incremental") << "tracking restarts with the full backup";
}

// A replica's change read that keeps nothing: what it reports is what the test checks.
class DiscardingSink : public engine::ChangeSink {
  public:
    Status begin(const engine::ChangeSet&) override { return {}; }
    Status data(std::size_t, std::uint64_t, std::span<const std::byte>) override { return {}; }
    Status zero(std::size_t, std::uint64_t, std::uint64_t) override { return {}; }
    Status commit() override { return {}; }
};

TEST_F(CheckpointMergeTest, ReplicaCycleAfterAnApplyIsFullAndSaysWhy) {
    lab::LabGuest& g = boot({});
    auto read = [&](const std::string& previous_xml) {
        engine::ChangeReadOptions o;
        o.vm = g.name();
        o.chain_id = "5e1ec7ed0c4a1e0f";
        o.previous_checkpoint_xml = previous_xml;
        o.scratch_dir = scratch.string();
        DiscardingSink sink;
        auto outcome = engine::read_vm_changes(g.connection(), o, sink);
        if (!outcome) throw std::runtime_error("change read: " + outcome.error().message());
        return std::move(*outcome);
    };
    auto first = read("");
    create(g, "base");
    auto second = read(first.checkpoint_xml);
    ASSERT_FALSE(second.set.disks.empty());
    EXPECT_TRUE(second.set.disks[0].incremental) << second.set.disks[0].full_reason;
    apply(g, "base");
    ASSERT_TRUE(g.wait_for_agent());
    auto third = read(second.checkpoint_xml);
    ASSERT_FALSE(third.set.disks.empty());
    EXPECT_FALSE(third.set.disks[0].incremental);
    EXPECT_NE(third.set.disks[0].full_reason.find("returned to checkpoint 'base'"),
              std::string::npos)
        << third.set.disks[0].full_reason;
    auto fourth = read(third.checkpoint_xml);
    EXPECT_TRUE(fourth.set.disks[0].incremental) << fourth.set.disks[0].full_reason;
}

TEST_F(CheckpointMergeTest, SubtreeDeletesTheBranchAndKeepsNow) {
    lab::LabGuest& g = boot({});
    auto unknown = run_vmshadow({"checkpoint", "delete", g.name(), "no-such-checkpoint"});
    EXPECT_NE(unknown.exit_code, 0);
    EXPECT_NE(unknown.err.find("no-such-checkpoint"), std::string::npos) << unknown.err;
    create(g, "root");
    create(g, "mid");
    create(g, "leaf");
    auto listed = run_vmshadow({"--json", "vm", "list", g.name()});
    ASSERT_EQ(listed.exit_code, 0) << listed.err;
    auto vms = json::parse(listed.out);
    EXPECT_EQ(vms[0]["checkpoints"]["count"], 3) << listed.out;
    EXPECT_TRUE(vms[0]["checkpoints"]["warnings"].empty()) << "3 layers, minutes old";
    ASSERT_TRUE(g.exec("echo kept > /root/now-marker && sync"));
    delete_checkpoint(g, "mid", true);
    auto t = tree(g);
    ASSERT_EQ(t.checkpoints.size(), 1u);
    EXPECT_EQ(t.checkpoints[0].name, "root");
    EXPECT_EQ(t.current, t.checkpoints[0].id);
    auto marker = g.exec("cat /root/now-marker");
    ASSERT_TRUE(marker) << marker.error().message();
    EXPECT_EQ(*marker, "kept\n");
    auto list = lab::run_checked({"virsh", "-c", lab::lab_uri(), "domblklist", g.name()});
    ASSERT_TRUE(list);
    EXPECT_NE(list->find(t.active[0].image), std::string::npos) << *list;
    // Its definition follows the merges: it starts again on the merged chain.
    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "shutdown", g.name()}));
    ASSERT_TRUE(wait_shut_off(g));
    auto started = g.start();
    ASSERT_TRUE(started) << started.error().message();
    ASSERT_TRUE(g.wait_for_agent());
    marker = g.exec("cat /root/now-marker");
    ASSERT_TRUE(marker) << marker.error().message();
    EXPECT_EQ(*marker, "kept\n");
}

TEST_F(CheckpointMergeTest, DeletedWhileTheVmIsOffThenTheNextBackupIsFullAndSaysWhy) {
    lab::LabGuest& g = boot({});
    create(g, "first");
    ASSERT_TRUE(g.exec("echo between > /root/between && sync"));
    create(g, "second");
    ASSERT_TRUE(g.exec("echo after > /root/after && sync"));
    backup_ok({g.name()});
    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "shutdown", g.name()}));
    ASSERT_TRUE(wait_shut_off(g));
    auto before = tree(g);
    fs::path now = flatten(active_of(before, "vda"), "now");

    delete_checkpoint(g, "first", false);   // qemu-img commit of second's layer into first's
    delete_checkpoint(g, "second", false);  // now pulls the layer (the domain XML names it)

    auto after = tree(g);
    EXPECT_TRUE(after.checkpoints.empty());
    std::string why;
    EXPECT_TRUE(same_content(now, active_of(after, "vda"), &why)) << why;
    EXPECT_NE(after.tracking_reset_reason.find("while the VM was off"), std::string::npos);
    auto started = g.start();
    ASSERT_TRUE(started) << started.error().message() << "\n" << dumpxml(g.name());
    ASSERT_TRUE(g.wait_for_agent());
    auto files = g.exec("cat /root/between /root/after");
    ASSERT_TRUE(files) << files.error().message();
    EXPECT_EQ(*files, "between\nafter\n");
    json next = backup_ok({g.name()});
    EXPECT_EQ(mode_of(next, "vda"), "full") << next.dump(2);
    EXPECT_NE(disk_of(next, "vda")->value("note", "").find("while the VM was off"),
              std::string::npos)
        << next.dump(2);
}

// b has two children: c on another branch (pulled with qemu-img) and d under the running VM
// (committed by libvirt). vmshadow killed after the pull, then after the commit: each rerun
// carries on from where the last stopped, and c and d keep their content.
TEST_F(CheckpointMergeTest, DeleteKilledPartWayIsFinishedByRunningItAgain) {
    lab::LabGuest& g = boot({});
    create(g, "a");
    create(g, "b");
    ASSERT_TRUE(g.exec("echo c > /root/branch && sync"));
    create(g, "c");
    apply(g, "b");
    ASSERT_TRUE(g.wait_for_agent());
    ASSERT_TRUE(g.exec("echo d > /root/branch && sync"));
    create(g, "d");
    auto before = tree(g);
    fs::path c = flatten(image_of(before, "c", "vda"), "c");
    fs::path d = flatten(image_of(before, "d", "vda"), "d");

    for (const char* step : {"checkpoint-delete-pulled", "checkpoint-delete-committed"}) {
        ::setenv("VMSHADOW_TEST_KILL_AT", step, 1);
        auto killed = run_vmshadow({"checkpoint", "delete", g.name(), "b"});
        ::unsetenv("VMSHADOW_TEST_KILL_AT");
        EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << step << ": " << killed.out << killed.err;
        EXPECT_TRUE(engine::find_checkpoint(tree(g), "b")) << step;
    }
    // Killed during its commit, b's layer may hold some of d's data: apply refuses b, naming
    // the command that finishes the delete, and list says so.
    auto refused = run_vmshadow({"checkpoint", "apply", g.name(), "b", "--yes"});
    EXPECT_EQ(refused.exit_code, 6) << refused.out << refused.err;  // conflict
    EXPECT_NE(refused.err.find("checkpoint 'b'"), std::string::npos) << refused.err;
    EXPECT_NE(refused.err.find("run `vmshadow checkpoint delete " + g.name() + " b` again"),
              std::string::npos)
        << refused.err;
    EXPECT_EQ(refused.err.find('\n'), refused.err.size() - 1) << "one line: " << refused.err;
    auto listed = run_vmshadow({"checkpoint", "list", g.name()});
    EXPECT_NE(listed.out.find("b  (production"), std::string::npos) << listed.out;
    EXPECT_NE(listed.out.find("[delete unfinished: run `vmshadow checkpoint delete " + g.name() +
                              " b` again; do not apply]"),
              std::string::npos)
        << listed.out;
    delete_checkpoint(g, "b", false);

    auto after = tree(g);
    EXPECT_FALSE(engine::find_checkpoint(after, "b"));
    std::string why;
    EXPECT_TRUE(same_content(c, image_of(after, "c", "vda"), &why)) << why;
    EXPECT_TRUE(same_content(d, image_of(after, "d", "vda"), &why)) << why;
    auto branch = g.exec("cat /root/branch");
    ASSERT_TRUE(branch) << branch.error().message();
    EXPECT_EQ(*branch, "d\n");
}

TEST_F(CheckpointMergeTest, RestoreInPlaceForgetsTheCheckpoints) {
    lab::LabGuest& g = boot({});
    json point = backup_ok({g.name()});
    create(g, "stale");
    auto out = run({"restore", point["point"].get<std::string>(), "--replace", "--json"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    auto t = tree(g);
    EXPECT_TRUE(t.checkpoints.empty());
    EXPECT_TRUE(t.active.empty()) << "the record is gone";
    EXPECT_FALSE(fs::exists(engine::checkpoint_folder(g.domain().uuid()) / "tree.json"));
    EXPECT_NE(out.out.find("forgotten"), std::string::npos) << out.out;
}

// The VM was lost (undefined, its disk and boot files gone) but its checkpoint record and the
// checkpoint's layer stayed: an instant recovery in place forgets them, as a restore does.
TEST_F(CheckpointMergeTest, InstantRecoveryInPlaceForgetsTheCheckpoints) {
    lab::LabGuest& g = boot({});
    create(g, "stale");
    json point = backup_ok({g.name()});
    const auto before = tree(g);
    const std::string uuid = g.domain().uuid();
    const std::string layer = image_of(before, "stale", "vda");
    for (const std::vector<std::string>& step :
         {std::vector<std::string>{"destroy"}, {"undefine", "--checkpoints-metadata"}}) {
        std::vector<std::string> args{"virsh", "-c", lab::lab_uri(), step[0], g.name()};
        args.insert(args.end(), step.begin() + 1, step.end());
        auto done = lab::run_checked(args);
        ASSERT_TRUE(done) << step[0] << ": " << done.error().message();
    }
    for (const char* file : {"vmlinuz", "initrd.img"}) fs::remove(g.dir() / file);
    fs::remove(active_of(before, "vda"));
    ASSERT_TRUE(fs::exists(layer));

    auto out = run({"restore", point["point"].get<std::string>(), "--instant", "--json"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    EXPECT_TRUE(json::parse(out.out)["instant"].get<bool>()) << out.out;
    EXPECT_NE(out.out.find("forgotten"), std::string::npos) << out.out;
    auto after = engine::load_checkpoint_tree(uuid);
    ASSERT_TRUE(after) << after.error().message();
    EXPECT_TRUE(after->checkpoints.empty());
    EXPECT_FALSE(fs::exists(engine::checkpoint_folder(uuid) / "tree.json")) << "the record is gone";
    EXPECT_FALSE(fs::exists(layer)) << "the stale layer no disk uses";
    EXPECT_TRUE(fs::exists(active_of(before, "vda"))) << "the recovered disk";
    auto listed = run_vmshadow({"checkpoint", "list", g.name()});
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    EXPECT_NE(listed.out.find("has no checkpoints"), std::string::npos) << listed.out;
}

}  // namespace
}  // namespace vmshadow::testing
