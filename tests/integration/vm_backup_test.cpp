// SPDX-License-Identifier: MIT
// `vmshadow backup` on real TCG lab guests: application-consistent backups that a database
// trusts, incrementals that read only what changed, the image / crash / offline methods,
// raw disks, exec writers that veto or hang, groups that fail as a whole, the scratch limit,
// and SIGKILL in the middle of a backup.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;
using lab::AgentMode;
using lab::DataDisk;
using lab::GuestOptions;

// The last "paused N" line of the workload's event log: the last row committed before the
// freeze hook paused it.
std::int64_t last_paused_row(lab::LabGuest& g) {
    auto events = g.read_file("/run/lab/events");
    if (!events) throw std::runtime_error(events.error().message());
    std::int64_t row = -1;
    std::size_t pos = 0;
    while ((pos = events->find("paused ", pos)) != std::string::npos) {
        row = std::stoll(events->substr(pos + 7));
        pos += 7;
    }
    return row;
}

void write_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
}

TEST_F(VmBackupTest, ApplicationBackupRestoresToTheRowsCommittedAtTheFreeze) {
    GuestOptions o;
    o.workload = true;
    lab::LabGuest& g = boot(o);
    std::this_thread::sleep_for(2s);  // some rows committed
    json vm = backup_ok({g.name()});
    EXPECT_EQ(vm["method"], "application");
    EXPECT_EQ(vm["consistency"], "application") << vm.dump(2);
    ASSERT_TRUE(vm["freeze_ms"].is_number()) << vm.dump(2);
    EXPECT_TRUE(vm["quiesce_ms"].is_number());
    EXPECT_GT(vm["bytes_read"].get<std::uint64_t>(), 0u);
    EXPECT_EQ(freeze_status(g), "thawed");
    std::int64_t frozen_at = last_paused_row(g);
    ASSERT_GT(frozen_at, 0);
    // The workload commits a row every few hundred ms, slower on a loaded TCG host: wait
    // (bounded) for one past the freeze instead of expecting it the moment the backup ends.
    auto committed = g.last_committed_row();
    for (int i = 0; i < 30 && committed && *committed <= frozen_at; ++i) {
        std::this_thread::sleep_for(1s);
        committed = g.last_committed_row();
    }
    ASSERT_TRUE(committed);
    EXPECT_GT(*committed, frozen_at) << "the workload did not resume after the thaw";

    fs::path disk = restore_disk(vm["point"], "vda");
    auto db = lab::read_file_from_image(disk, "/var/lib/lab/db.sqlite");
    ASSERT_TRUE(db) << db.error().message();
    fs::path db_file = dir / "db.sqlite";
    write_file(db_file, *db);
    auto check = lab::run_checked({"sqlite3", db_file.string(), "PRAGMA integrity_check;"});
    ASSERT_TRUE(check) << check.error().message();
    EXPECT_EQ(*check, "ok\n");
    EXPECT_EQ(file_on_image(disk, "/var/lib/lab/db.sqlite-wal"), "") << "the WAL was checkpointed";
    auto rows = lab::sqlite_max_row(db_file);
    ASSERT_TRUE(rows) << rows.error().message();
    EXPECT_EQ(*rows, frozen_at) << "exactly the rows committed at the freeze";
    EXPECT_TRUE(scratch_leftovers().empty());
    EXPECT_EQ(checkpoints(g).size(), 1u);
}

TEST_F(VmBackupTest, IncrementalReadsAndStoresOnlyTheChangedExtents) {
    GuestOptions o;
    o.data_disks = {DataDisk{DataDisk::Kind::ext4, "256M"}};
    lab::LabGuest& g = boot(o);
    ASSERT_TRUE(g.exec("dd if=/dev/urandom of=/data/vdb/base bs=1M count=48 && sync"));
    json full = backup_ok({g.name()});
    ASSERT_EQ(mode_of(full, "vdb"), "full");
    const std::string first_checkpoint = full["checkpoint"];

    ASSERT_TRUE(g.exec("dd if=/dev/urandom of=/data/vdb/delta bs=1M count=8 && sync"));
    json inc = backup_ok({g.name()});
    ASSERT_EQ(inc["incremental_from"], first_checkpoint) << inc.dump(2);
    const json* vdb = disk_of(inc, "vdb");
    ASSERT_NE(vdb, nullptr);
    EXPECT_EQ(vdb->at("mode"), "incremental");
    EXPECT_GE(vdb->at("bytes_read").get<std::uint64_t>(), 8u << 20);
    EXPECT_LT(vdb->at("bytes_read").get<std::uint64_t>(), 12u << 20) << inc.dump(2);
    EXPECT_LT(vdb->at("bytes_added").get<std::uint64_t>(), 12u << 20);
    EXPECT_EQ(mode_of(inc, "vda"), "incremental");
    EXPECT_LT(inc["bytes_read"].get<std::uint64_t>(), full["bytes_read"].get<std::uint64_t>() / 4);
    // Only the newest checkpoint of this repository is kept.
    auto names = checkpoints(g);
    ASSERT_EQ(names.size(), 1u);
    EXPECT_EQ(names[0], inc["checkpoint"]);

    // The incremental point is a whole disk: both files are there, bit for bit.
    auto sum = g.exec("md5sum /data/vdb/base /data/vdb/delta | cut -d' ' -f1");
    ASSERT_TRUE(sum);
    fs::path restored = restore_disk(inc["point"], "vdb");
    auto base = lab::read_file_from_image(restored, "/base");
    auto delta = lab::read_file_from_image(restored, "/delta");
    ASSERT_TRUE(base && delta);
    write_file(dir / "base", *base);
    write_file(dir / "delta", *delta);
    auto host_sum = lab::run_checked({"sh", "-c",
                                      "md5sum " + (dir / "base").string() + " " +
                                          (dir / "delta").string() + " | cut -d' ' -f1"});
    ASSERT_TRUE(host_sum);
    EXPECT_EQ(*host_sum, *sum);
}

TEST_F(VmBackupTest, ImageCrashAndOfflineBackupsEachRestoreAConsistentDisk) {
    GuestOptions o;
    o.workload = true;
    lab::LabGuest& g = boot(o);
    // A crash-consistent copy holds what reached the disk: make the new database durable.
    ASSERT_TRUE(g.exec("sleep 1; sync"));
    auto check_db = [&](const std::string& point) {
        fs::path disk = restore_disk(point, "vda");
        auto db = lab::read_file_from_image(disk, "/var/lib/lab/db.sqlite");
        ASSERT_TRUE(db) << db.error().message();
        fs::path copy = dir / ("db-" + point.substr(0, 8));
        write_file(copy, *db);
        // The image's fsfreeze hook did not run: the WAL holds the latest commits, but the
        // main file alone must already be a valid database.
        auto check = lab::run_checked({"sqlite3", copy.string(), "PRAGMA integrity_check;"});
        ASSERT_TRUE(check) << check.error().message();
        EXPECT_EQ(*check, "ok\n");
        fs::remove(disk);
    };

    json image = backup_ok({g.name(), "--method", "image"});
    EXPECT_EQ(image["consistency"], "image") << image.dump(2);
    EXPECT_TRUE(image["paused_ms"].is_number());
    EXPECT_TRUE(image["freeze_ms"].is_null());
    auto state = g.domain().state();
    ASSERT_TRUE(state);
    EXPECT_EQ(*state, virt::DomainState::running) << "returned to the state it was in";
    auto points = run({"points", g.name(), "--json"});
    ASSERT_EQ(points.exit_code, 0);
    check_db(image["point"]);
    // The memory image is in the restore point, not left in scratch.
    EXPECT_TRUE(scratch_leftovers().empty());

    json crash = backup_ok({g.name(), "--method", "crash"});
    EXPECT_EQ(crash["consistency"], "crash");
    EXPECT_TRUE(crash["freeze_ms"].is_null());
    check_db(crash["point"]);

    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "shutdown", g.name()}));
    for (int i = 0; i < 120; ++i) {
        auto s = g.domain().state();
        if (s && *s == virt::DomainState::shutoff) break;
        std::this_thread::sleep_for(1s);
    }
    json offline = backup_ok({g.name()});
    EXPECT_EQ(offline["method"], "offline");
    EXPECT_EQ(offline["consistency"], "offline");
    check_db(offline["point"]);
}

TEST_F(VmBackupTest, ImagePointHoldsTheMemoryImage) {
    lab::LabGuest& g = boot({});
    json image = backup_ok({g.name(), "--method", "image"});
    ASSERT_EQ(image["consistency"], "image");
    auto listing = run({"points", g.name(), "--json"});
    ASSERT_EQ(listing.exit_code, 0);
    auto j = json::parse(listing.out);
    ASSERT_EQ(j.size(), 1u);
    bool has_memory = false;
    for (const auto& f : j[0].value("files", json::array()))
        if (f.value("role", "") == "memory" && f.value("size", 0ull) > (64ull << 20))
            has_memory = true;
    EXPECT_TRUE(has_memory) << listing.out;
}

TEST_F(VmBackupTest, RawDiskIsReadInFullEachTimeWithHashDedupAndSaysSo) {
    GuestOptions o;
    o.root_format = "raw";
    lab::LabGuest& g = boot(o);
    json first = backup_ok({g.name()});
    EXPECT_TRUE(first["checkpoint"].is_null()) << "no checkpoint without a qcow2 disk";
    json second = backup_ok({g.name()});
    const json* vda = disk_of(second, "vda");
    ASSERT_NE(vda, nullptr);
    EXPECT_EQ(vda->at("mode"), "full");
    EXPECT_NE(vda->at("note").get<std::string>().find("raw image"), std::string::npos);
    EXPECT_LT(second["bytes_added"].get<std::uint64_t>(),
              first["bytes_added"].get<std::uint64_t>() / 4)
        << "unchanged chunks deduplicated by hash";
    EXPECT_TRUE(checkpoints(g).empty());
}

TEST_F(VmBackupTest, AskedMethodThatCannotBeHadFailsWithTheCause) {
    GuestOptions o;
    o.agent_channel = false;
    lab::LabGuest& g = boot(o);
    auto out = backup({g.name(), "--method", "application"});
    EXPECT_NE(out.exit_code, 0);
    auto j = json::parse(out.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out.out;
    EXPECT_NE(j["error"].get<std::string>().find("no guest agent channel"), std::string::npos)
        << out.out;
    EXPECT_EQ(j["exit_code"], out.exit_code);
    // auto falls back to crash and says why.
    json vm = backup_ok({g.name()});
    EXPECT_EQ(vm["method"], "crash");
    EXPECT_FALSE(vm["reasons"].empty());
}

// The channel is there but no agent answers on it (the fixture waits for the guest's "lab:
// agent off"): auto falls back to crash and says why.
TEST_F(VmBackupTest, GuestWhoseAgentIsOffIsBackedUpCrashConsistentSayingWhy) {
    GuestOptions o;
    o.agent = lab::AgentMode::off;
    lab::LabGuest& g = boot(o);
    json vm = backup_ok({g.name()});
    EXPECT_EQ(vm["method"], "crash") << vm.dump(2);
    EXPECT_FALSE(vm["reasons"].empty()) << vm.dump(2);
}

// A disk target the VM does not have is the user's mistake: exit 3 naming the VM's disks, not
// a writer veto (12). Checked on a shut-off guest: the plan fails before anything is read.
TEST_F(VmBackupTest, UnknownDiskTargetIsNotFoundAndNamesTheVmsDisks) {
    auto guest = lab::LabGuest::create({}, current_test_name());
    ASSERT_TRUE(guest) << guest.error().message();
    guests.push_back(std::move(*guest));
    lab::LabGuest& g = guests.back();
    for (const char* flag : {"--disk", "--exclude-disk"}) {
        auto out = backup({g.name(), flag, "vdz"});
        EXPECT_EQ(out.exit_code, 3) << flag << out.out << out.err;
        EXPECT_NE(out.out.find("no disk 'vdz' (its disks: vda)"), std::string::npos) << out.out;
    }
    auto points = run({"points", "--json"});
    EXPECT_EQ(points.out, "[]\n");
}

TEST_F(VmBackupTest, ExecWriterVetoFailsTheBackupAndWritersShowsIt) {
    lab::LabGuest& g = boot({});
    write_file(writers_dir / "veto.json",
               R"({"name": "veto", "command": ["/bin/sh", "-c", "echo tables locked >&2; exit 3"],
                   "events": ["freeze"]})");
    auto out = backup({g.name()});
    EXPECT_EQ(out.exit_code, 12) << out.out << out.err;  // cancelled: a writer vetoed
    EXPECT_NE(out.out.find("tables locked"), std::string::npos) << out.out;
    EXPECT_EQ(freeze_status(g), "thawed");
    EXPECT_TRUE(scratch_leftovers().empty());
    EXPECT_TRUE(checkpoints(g).empty()) << "the failed backup's checkpoint was deleted";
    auto points = run({"points", "--json"});
    EXPECT_EQ(json::parse(points.out).size(), 0u);
    auto writers = run_vmshadow({"writers", "--json", "--state-file", state_file.string(),
                                 "--writers-dir", writers_dir.string()});
    ASSERT_EQ(writers.exit_code, 0) << writers.err;
    EXPECT_NE(writers.out.find("tables locked"), std::string::npos) << writers.out;

    // A writer that hangs times out (its own limit), and the backup fails the same way.
    fs::remove(writers_dir / "veto.json");
    write_file(writers_dir / "hang.json",
               R"({"name": "hang", "command": ["/bin/sh", "-c", "sleep 600", "hang"],
                   "events": ["prepare-backup"],
                   "timeouts": {"prepare-backup": 2}})");
    auto hung = backup({g.name()});
    EXPECT_EQ(hung.exit_code, 5) << hung.out << hung.err;  // timeout
    writers = run_vmshadow({"writers", "--json", "--state-file", state_file.string(),
                            "--writers-dir", writers_dir.string()});
    EXPECT_NE(writers.out.find("timeout"), std::string::npos) << writers.out;
    EXPECT_EQ(freeze_status(g), "thawed");
}

TEST_F(VmBackupTest, GroupWhereOneAgentFailsKeepsNoPointAndLeavesBothRunning) {
    lab::LabGuest& a = boot({}, "-a");
    GuestOptions hung;
    hung.agent = AgentMode::hang;
    lab::LabGuest& b = boot(hung, "-b");
    auto out = backup({a.name(), b.name(), "--group", "--method", "application"});
    EXPECT_NE(out.exit_code, 0) << out.out;
    auto j = json::parse(out.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out.out;
    EXPECT_TRUE(j.contains("error"));
    for (const auto& vm : j["vms"]) EXPECT_TRUE(vm["point"].is_null()) << out.out;
    auto points = run({"points", "--json"});
    EXPECT_EQ(json::parse(points.out).size(), 0u) << "all or nothing";
    for (lab::LabGuest* g : {&a, &b}) {
        auto s = g->domain().state();
        ASSERT_TRUE(s);
        EXPECT_EQ(*s, virt::DomainState::running) << g->name();
        EXPECT_TRUE(checkpoints(*g).empty()) << g->name();
    }
    EXPECT_EQ(freeze_status(a), "thawed");
    EXPECT_TRUE(scratch_leftovers().empty());
}

TEST_F(VmBackupTest, GroupCapturesAgentAndAgentlessMembersTogether) {
    lab::LabGuest& a = boot({}, "-a");
    GuestOptions none;
    none.agent_channel = false;
    lab::LabGuest& b = boot(none, "-b");
    auto out = backup({a.name(), b.name(), "--group"});
    ASSERT_EQ(out.exit_code, 0) << out.out << out.err;
    auto j = json::parse(out.out);
    ASSERT_EQ(j["vms"].size(), 2u);
    EXPECT_EQ(j["vms"][0]["consistency"], "application");
    EXPECT_EQ(j["vms"][1]["consistency"], "crash");
    EXPECT_TRUE(j["vms"][1]["paused_ms"].is_number()) << "agentless member paused for the instant";
    auto s = b.domain().state();
    ASSERT_TRUE(s);
    EXPECT_EQ(*s, virt::DomainState::running);
}

TEST_F(VmBackupTest, ScratchLimitAbortsBeforeTheGuestSeesAWriteError) {
    GuestOptions o;
    o.data_disks = {DataDisk{DataDisk::Kind::ext4, "512M"}};
    lab::LabGuest& g = boot(o);
    ASSERT_TRUE(g.exec("dd if=/dev/urandom of=/data/vdb/fill bs=1M count=160 && sync", 120s));
    // Overwrite the file continuously while the backup reads: every overwritten cluster is
    // first copied into scratch.
    ASSERT_TRUE(
        g.exec("(while :; do dd if=/dev/zero of=/data/vdb/fill bs=1M count=160 "
               "conv=notrunc,fsync 2>/dev/null; done) >/dev/null 2>&1 &"));
    auto out = backup({g.name(), "--max-scratch", "8M"});
    ASSERT_TRUE(g.exec("kill %1 2>/dev/null; pkill dd; true"));
    EXPECT_EQ(out.exit_code, 4) << out.out << out.err;
    EXPECT_NE(out.out.find("--max-scratch"), std::string::npos) << out.out;
    EXPECT_TRUE(scratch_leftovers().empty());
    auto s = g.domain().state();
    ASSERT_TRUE(s);
    EXPECT_EQ(*s, virt::DomainState::running);
    auto reason =
        lab::run_checked({"virsh", "-c", lab::lab_uri(), "domstate", "--reason", g.name()});
    ASSERT_TRUE(reason);
    EXPECT_EQ(reason->find("paused"), std::string::npos) << *reason;
    auto dmesg = g.exec("dmesg");
    ASSERT_TRUE(dmesg);
    EXPECT_EQ(dmesg->find("I/O error"), std::string::npos) << *dmesg;
    EXPECT_EQ(json::parse(run({"points", "--json"}).out).size(), 0u);
}

TEST_F(VmBackupTest, SigkillDuringFreezeAndDuringCopyLeavesTheGuestRunningAndThawed) {
    GuestOptions o;
    o.data_disks = {DataDisk{DataDisk::Kind::ext4, "256M"}};
    lab::LabGuest& g = boot(o);
    ASSERT_TRUE(g.exec("dd if=/dev/urandom of=/data/vdb/data bs=1M count=96 && sync", 120s));
    auto args = [&] {
        return std::vector<std::string>{
            "--repo", repo.string(),   "--scratch-dir",      scratch.string(), "backup",
            g.name(), "--writers-dir", writers_dir.string(), "--state-file",   state_file.string()};
    };
    // During the freeze: an exec writer holds Freeze while the guest is frozen.
    write_file(
        writers_dir / "slow.json",
        R"({"name": "slow", "command": ["/bin/sh", "-c", "sleep 30"], "events": ["freeze"]})");
    pid_t pid = start_vmshadow_in_own_group(args());
    bool frozen = false;
    for (int i = 0; i < 300 && !frozen; ++i) {
        frozen = freeze_status(g) == "frozen";
        if (!frozen) std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(frozen) << "the guest never froze";
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    std::string status;
    for (int i = 0; i < 50; ++i) {
        status = freeze_status(g);
        if (status == "thawed") break;
        std::this_thread::sleep_for(200ms);
    }
    EXPECT_EQ(status, "thawed") << "the thaw guardian thawed the guest";
    fs::remove(writers_dir / "slow.json");

    // During the copy: once the job's scratch files exist, the data is being read.
    pid = start_vmshadow_in_own_group(args());
    bool copying = false;
    for (int i = 0; i < 600 && !copying; ++i) {
        auto job = lab::run_process({"virsh", "-c", lab::lab_uri(), "domjobinfo", g.name()});
        copying = job && job->out.find("Backup") != std::string::npos;
        if (!copying) std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(copying) << "the backup job never started";
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    EXPECT_EQ(freeze_status(g), "thawed");
    auto s = g.domain().state();
    ASSERT_TRUE(s);
    EXPECT_EQ(*s, virt::DomainState::running);

    // The next backup ends what was left and succeeds without help.
    json vm = backup_ok({g.name()});
    EXPECT_EQ(vm["consistency"], "application");
    EXPECT_TRUE(scratch_leftovers().empty());
    EXPECT_EQ(checkpoints(g).size(), 1u);
}

TEST_F(VmBackupTest, RelativeScratchDirIsTakenUnderTheWorkingDirectory) {
    lab::LabGuest& g = boot(GuestOptions{});
    // libvirtd and the thaw guardian do not share vmshadow's working directory: vmshadow
    // must hand them the absolute path.
    struct Restore {
        fs::path cwd = fs::current_path();
        fs::path& scratch;
        fs::path absolute = scratch;
        ~Restore() {
            fs::current_path(cwd);
            scratch = absolute;
        }
    } restore{.scratch = scratch};
    fs::current_path(dir);
    scratch = fs::relative(restore.absolute, dir);
    ASSERT_TRUE(scratch.is_relative());
    json vm = backup_ok({g.name()});
    EXPECT_EQ(vm["consistency"], "application") << vm.dump(2);
    EXPECT_TRUE(scratch_leftovers().empty());
}

}  // namespace
}  // namespace vmshadow::testing
