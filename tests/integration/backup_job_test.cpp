// SPDX-License-Identifier: MIT
// The libvirt live-backup provider on real TCG guests: BackupJob (pull-mode backup with
// pre-created scratch, checkpoints created with the job), the NBD export reader (full and
// dirty-bitmap walks, ordered parallel reads), checkpoints (naming, listing, deleting,
// health), failure cleanup, leftovers of a killed process, foreign jobs and checkpoints,
// raw disks, and scratch watching.
#include "virt/backup_job.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "lab/lab_guest.h"
#include "lab/lab_process.h"
#include "virt/checkpoints.h"
#include "virt/libvirt_error.h"
#include "virt/nbd_export.h"
#include "virt/qemu_img.h"

extern char** environ;

namespace vmshadow {
namespace {

namespace fs = std::filesystem;
using lab::DataDisk;
using lab::GuestOptions;
using lab::LabGuest;
using virt::BackupJob;
using virt::BackupSpec;
using virt::ExportRange;
using Clock = std::chrono::steady_clock;

constexpr const char* kRepo = "5eed0b1e00000000";
constexpr const char* kOtherRepo = "0a0b0c0d11111111";
constexpr const char* kChildEnv = "VMSHADOW_BACKUP_CHILD";  // domain|scratch dir|checkpoint

std::string test_name() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

LabGuest boot(const GuestOptions& options) {
    auto guest = LabGuest::create(options, test_name());
    if (!guest) throw std::runtime_error("create: " + guest.error().message());
    if (auto s = guest->start(); !s) throw std::runtime_error(s.error().message());
    if (auto s = guest->wait_for_agent(); !s) throw std::runtime_error(s.error().message());
    return std::move(*guest);
}

std::string checkpoint_name(const char* repo = kRepo) {
    // Names carry milliseconds; two in one millisecond would collide.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    auto name = virt::make_checkpoint_name(repo, std::chrono::system_clock::now());
    if (!name) throw std::runtime_error(name.error().message());
    return *name;
}

fs::path scratch_dir(const LabGuest& guest) {
    return guest.dir() / "scratch";
}

bool dir_empty(const fs::path& dir) {
    std::error_code ec;
    return !fs::exists(dir, ec) || fs::is_empty(dir, ec);
}

// Run directories of this VM's jobs under the default runtime dir.
int run_dirs_of(const LabGuest& guest) {
    int n = 0;
    std::error_code ec;
    std::string uuid = guest.domain().uuid();
    for (const auto& e : fs::directory_iterator(virt::kDefaultBackupRuntimeDir, ec)) {
        if (e.path().filename().string().starts_with(uuid + ".")) ++n;
    }
    return n;
}

bool backup_job_running(const LabGuest& guest) {
    virDomainJobInfo info{};
    if (virDomainGetJobInfo(guest.domain().raw(), &info) < 0) return false;
    return info.type != VIR_DOMAIN_JOB_NONE;
}

struct ReadStats {
    std::uint64_t data = 0;
    std::uint64_t zero = 0;
    std::vector<ExportRange> ranges;
};

// Reads one export into a sparse file of the export's size.
Result<ReadStats> read_export(const BackupJob& job, const std::string& target,
                              const fs::path& out) {
    const auto* e = job.find_export(target);
    if (!e) return fail(ErrorKind::not_found, "no export for " + target);
    auto nbd = virt::NbdExport::connect(
        {job.socket().string(), e->export_name, e->dirty_context(), "disk " + target});
    if (!nbd) return fail(nbd.error());
    auto ranges = nbd->all_ranges();
    if (!ranges) return fail(ranges.error());
    UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(nbd->size())) != 0) {
        return fail(ErrorKind::io, "create " + out.string());
    }
    ReadStats stats;
    stats.ranges = *ranges;
    for (const auto& r : *ranges)
        (r.kind == ExportRange::Kind::data ? stats.data : stats.zero) += r.length;
    std::uint64_t expect = 0;
    auto sink = [&](std::uint64_t offset, std::span<const std::byte> data) -> Status {
        if (offset < expect) return fail(ErrorKind::internal, "pieces out of order");
        expect = offset + data.size();
        if (::pwrite(fd.get(), data.data(), data.size(), static_cast<off_t>(offset)) !=
            static_cast<ssize_t>(data.size())) {
            return fail(ErrorKind::io, "write " + out.string());
        }
        return {};
    };
    if (auto s = nbd->read(*ranges, sink, {.request_bytes = 1u << 20, .in_flight = 4}); !s) {
        return fail(s.error());
    }
    return stats;
}

std::string read_host_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A file out of an ext4 image on the host (debugfs), or nullopt when it is not there.
std::optional<std::string> file_in_image(const fs::path& image, const std::string& path) {
    fs::path out = image.string() + ".dump";
    fs::remove(out);
    auto r = lab::run_process({"debugfs", "-R", "dump " + path + " " + out.string(), image});
    if (!r || !fs::exists(out)) return std::nullopt;
    std::string text = read_host_file(out);
    fs::remove(out);
    return text;
}

// Begins `job` the way the VM writer will: agent freeze, begin, thaw.
void begin_frozen(LabGuest& guest, BackupJob& job) {
    int frozen = virDomainFSFreeze(guest.domain().raw(), nullptr, 0, 0);
    ASSERT_GE(frozen, 1) << "freeze failed";
    auto frozen_at = Clock::now();
    auto begun = job.begin();
    int thawed = virDomainFSThaw(guest.domain().raw(), nullptr, 0, 0);
    double window = std::chrono::duration<double, std::milli>(Clock::now() - frozen_at).count();
    ASSERT_TRUE(begun) << begun.error().message();
    EXPECT_EQ(thawed, frozen);
    ::testing::Test::RecordProperty("freeze_window_ms", static_cast<int>(window));
    std::printf("[backup] freeze window (freeze returned -> thaw returned): %.1f ms\n", window);
}

TEST(backup_job, FullPullBackupExportsPointInTimeImage) {
    LabGuest guest = boot({.data_disks = {{DataDisk::Kind::ext4, "64M"}}});
    auto before = guest.exec(
        "dd if=/dev/urandom of=/data/vdb/before bs=64k count=4 2>/dev/null && sync && echo ok");
    ASSERT_TRUE(before) << before.error().message();
    auto before_data = guest.read_file("/data/vdb/before");
    ASSERT_TRUE(before_data) << before_data.error().message();
    ASSERT_EQ(before_data->size(), 256u * 1024);

    std::string chk = checkpoint_name();
    auto job = BackupJob::prepare(
        guest.domain(),
        {.disks = {"vda", "vdb"}, .scratch_dir = scratch_dir(guest), .new_checkpoint = chk});
    ASSERT_TRUE(job) << job.error().message();
    EXPECT_EQ(run_dirs_of(guest), 1);
    begin_frozen(guest, *job);
    RecordProperty("begin_call_us", static_cast<int>(job->begin_call().count()));
    std::printf("[backup] begin call (inside the freeze window): %.1f ms\n",
                job->begin_call().count() / 1000.0);
    ASSERT_EQ(job->exports().size(), 2u);
    for (const auto& e : job->exports()) {
        EXPECT_EQ(e.export_name, e.target);
        EXPECT_FALSE(e.incremental);
        EXPECT_TRUE(e.bitmap.empty());
        EXPECT_GE(e.index, 1);
    }

    // The guest changes the disk after the point in time.
    auto changed = guest.exec(
        "dd if=/dev/urandom of=/data/vdb/before bs=64k count=4 conv=notrunc 2>/dev/null && "
        "echo later > /data/vdb/after && sync && echo ok");
    ASSERT_TRUE(changed) << changed.error().message();
    auto now_data = guest.read_file("/data/vdb/before");
    ASSERT_TRUE(now_data);
    ASSERT_NE(*now_data, *before_data);

    auto start = Clock::now();
    fs::path vdb = guest.dir() / "export-vdb.raw";
    auto stats = read_export(*job, "vdb", vdb);
    ASSERT_TRUE(stats) << stats.error().message();
    fs::path vda = guest.dir() / "export-vda.raw";
    auto root = read_export(*job, "vda", vda);
    ASSERT_TRUE(root) << root.error().message();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("[backup] read %.1f MiB of data (vda %.1f, vdb %.1f) in %.2f s\n",
                (stats->data + root->data) / 1048576.0, root->data / 1048576.0,
                stats->data / 1048576.0, secs);
    // Only allocated data is read: a small part of the 256 MiB root disk.
    EXPECT_LT(root->data, 64u << 20);
    EXPECT_GT(root->zero, 128u << 20);
    EXPECT_EQ(root->data + root->zero, 256u << 20) << "a full walk covers the whole disk";

    // The export is the disk at the point in time: the old content, no later file, and a
    // clean filesystem (it was frozen).
    auto exported = file_in_image(vdb, "/before");
    ASSERT_TRUE(exported) << "/before missing from the export";
    EXPECT_TRUE(*exported == *before_data) << "the export holds data written after begin";
    EXPECT_FALSE(file_in_image(vdb, "/after")) << "a file written after begin is in the export";
    auto fsck = lab::run_process({"e2fsck", "-fn", vdb.string()});
    ASSERT_TRUE(fsck);
    EXPECT_EQ(fsck->exit_code, 0) << fsck->out << fsck->err;
    auto root_fsck = lab::run_process({"e2fsck", "-fn", vda.string()});
    ASSERT_TRUE(root_fsck);
    EXPECT_EQ(root_fsck->exit_code, 0) << root_fsck->out << root_fsck->err;

    auto finished = job->finish();
    ASSERT_TRUE(finished) << finished.error().message();
    EXPECT_FALSE(backup_job_running(guest));
    auto found = virt::find_checkpoint(guest.domain(), chk);
    ASSERT_TRUE(found) << found.error().message();
    ASSERT_TRUE(found->has_value()) << "the checkpoint created with the backup is gone";
    EXPECT_EQ((*found)->repo, std::string(kRepo).substr(0, 8));
    EXPECT_TRUE(dir_empty(scratch_dir(guest)));
    EXPECT_EQ(run_dirs_of(guest), 0);
    auto health = virt::check_checkpoint(guest.domain(), chk);
    ASSERT_TRUE(health) << health.error().message();
    EXPECT_TRUE(health->usable()) << health->reason;
}

// Test-only: removes a checkpoint's bitmap from a disk through QMP, the way a QEMU crash or
// an out-of-band image edit loses it.
Status remove_bitmap_behind_libvirts_back(LabGuest& guest, const std::string& target,
                                          const std::string& bitmap) {
    char* raw = nullptr;
    const char* query = R"({"execute":"query-named-block-nodes","arguments":{"flat":true}})";
    if (virDomainQemuMonitorCommand(guest.domain().raw(), query, &raw, 0) < 0) {
        return fail(virt::libvirt_error("query-named-block-nodes"));
    }
    virt::CString reply(raw);
    auto nodes = nlohmann::json::parse(reply.get());
    std::string node;
    for (const auto& n : nodes["return"]) {
        if (n.value("drv", "") == "qcow2" && n.value("file", "") == guest.disk_path(target)) {
            node = n.value("node-name", "");
        }
    }
    if (node.empty()) return fail(ErrorKind::not_found, "no qcow2 node for " + target);
    nlohmann::json remove = {{"execute", "block-dirty-bitmap-remove"},
                             {"arguments", {{"node", node}, {"name", bitmap}}}};
    if (virDomainQemuMonitorCommand(guest.domain().raw(), remove.dump().c_str(), &raw, 0) < 0) {
        return fail(virt::libvirt_error("block-dirty-bitmap-remove"));
    }
    free(raw);
    return {};
}

// Runs prepare + begin for one backup of `disks` and fails the test when it can't.
BackupJob begin_job(LabGuest& guest, BackupSpec spec) {
    if (spec.scratch_dir.empty()) spec.scratch_dir = scratch_dir(guest);
    auto job = BackupJob::prepare(guest.domain(), spec);
    if (!job) throw std::runtime_error("prepare: " + job.error().message());
    if (auto s = job->begin(); !s) throw std::runtime_error("begin: " + s.error().message());
    std::printf("[backup] begin call (%zu disks, %s, %s): %.1f ms\n", spec.disks.size(),
                spec.incremental_from ? "incremental" : "full",
                spec.new_checkpoint ? "new checkpoint" : "no checkpoint",
                job->begin_call().count() / 1000.0);
    return std::move(*job);
}

TEST(backup_job, IncrementalExportsOnlyDirtyExtents) {
    // 3 GiB: the walk crosses its 1 GiB block-status windows.
    LabGuest guest = boot({.data_disks = {{DataDisk::Kind::blank, "3G"}}});
    std::string c1 = checkpoint_name();
    {
        BackupJob full = begin_job(guest, {.disks = {"vda", "vdb"}, .new_checkpoint = c1});
        const auto* e = full.find_export("vdb");
        ASSERT_NE(e, nullptr);
        auto nbd = virt::NbdExport::connect({full.socket().string(), e->export_name, "", "vdb"});
        ASSERT_TRUE(nbd) << nbd.error().message();
        auto ranges = nbd->all_ranges();
        ASSERT_TRUE(ranges) << ranges.error().message();
        ASSERT_EQ(ranges->size(), 1u) << "a blank disk is one zero range";
        EXPECT_EQ((*ranges)[0], (ExportRange{0, 3ull << 30, ExportRange::Kind::zero}));
        auto done = full.finish();
        ASSERT_TRUE(done) << done.error().message();
    }
    auto health = virt::check_checkpoint(guest.domain(), c1);
    ASSERT_TRUE(health) << health.error().message();
    EXPECT_TRUE(health->usable()) << health->reason;

    // Known blocks written straight to the (unmounted) disk.
    const std::uint64_t kBlock = 64 * 1024;
    // Blocks at 1 MiB, 81 × 64 KiB, 40 MiB, on both sides of the 1 GiB window boundary, and
    // in the third window.
    const std::vector<std::uint64_t> blocks = {16, 81, 640, 16383, 16384, 40000};
    std::string cmd = "yes vmshadow-incremental | head -c 65536 > /tmp/p";
    for (auto b : blocks) {
        cmd += " && dd if=/tmp/p of=/dev/vdb bs=64k seek=" + std::to_string(b) +
               " conv=notrunc,fsync 2>/dev/null";
    }
    auto wrote = guest.exec(cmd + " && sync && echo ok");
    ASSERT_TRUE(wrote) << wrote.error().message();
    std::string pattern;
    while (pattern.size() < kBlock) pattern += "vmshadow-incremental\n";
    pattern.resize(kBlock);

    std::string c2 = checkpoint_name();
    BackupJob incr =
        begin_job(guest, {.disks = {"vda", "vdb"}, .incremental_from = c1, .new_checkpoint = c2});
    const auto* vdb = incr.find_export("vdb");
    ASSERT_NE(vdb, nullptr);
    EXPECT_TRUE(vdb->incremental);
    EXPECT_EQ(vdb->bitmap, "backup-vdb");
    EXPECT_EQ(vdb->dirty_context(), "qemu:dirty-bitmap:backup-vdb");

    fs::path out = guest.dir() / "incr-vdb.raw";
    auto stats = read_export(incr, "vdb", out);
    ASSERT_TRUE(stats) << stats.error().message();
    std::printf("[backup] incremental vdb: %zu ranges, %.0f KiB data, %.0f KiB zero\n",
                stats->ranges.size(), stats->data / 1024.0, stats->zero / 1024.0);
    // Every written block is covered by a data range, and little else is.
    for (auto b : blocks) {
        bool covered = false;
        for (const auto& r : stats->ranges) {
            covered |= r.kind == ExportRange::Kind::data && r.offset <= b * kBlock &&
                       r.end() >= (b + 1) * kBlock;
        }
        EXPECT_TRUE(covered) << "block " << b << " is not in the dirty data ranges";
    }
    EXPECT_LE(stats->data + stats->zero, 2u << 20) << "the incremental is not small";
    std::ifstream image(out, std::ios::binary);
    for (auto b : blocks) {
        std::string block(kBlock, '\0');
        image.seekg(static_cast<std::streamoff>(b * kBlock));
        image.read(block.data(), static_cast<std::streamsize>(kBlock));
        EXPECT_TRUE(block == pattern)
            << "exported block " << b << " differs from what the guest wrote";
    }
    // The root disk changed little too.
    auto root = read_export(incr, "vda", guest.dir() / "incr-vda.raw");
    ASSERT_TRUE(root) << root.error().message();
    EXPECT_LT(root->data + root->zero, 16u << 20);

    auto done = incr.finish();
    ASSERT_TRUE(done) << done.error().message();
    auto list = virt::list_checkpoints(guest.domain());
    ASSERT_TRUE(list) << list.error().message();
    ASSERT_EQ(list->size(), 2u);
    EXPECT_EQ((*list)[0].name, c1);
    EXPECT_EQ((*list)[1].name, c2);
    EXPECT_EQ((*list)[1].parent, c1);
    ASSERT_EQ((*list)[1].disks.size(), 2u);
    for (const auto& d : (*list)[1].disks) EXPECT_EQ(d.bitmap, c2);

    // The stored XML redefines the checkpoint after its metadata was lost.
    auto xml = virt::checkpoint_xml(guest.domain(), c2);
    ASSERT_TRUE(xml) << xml.error().message();
    EXPECT_NE(xml->find("<domain"), std::string::npos);
    virt::CheckpointHandle h(virDomainCheckpointLookupByName(guest.domain().raw(), c2.c_str(), 0));
    ASSERT_TRUE(h);
    ASSERT_EQ(virDomainCheckpointDelete(h.get(), VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY), 0);
    auto redefined = virt::redefine_checkpoint(guest.domain(), *xml);
    ASSERT_TRUE(redefined) << redefined.error().message();
    auto again = virt::check_checkpoint(guest.domain(), c2);
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->usable()) << again->reason;

    // Deleting one of ours works; the chain shortens.
    ASSERT_TRUE(virt::delete_checkpoint(guest.domain(), c1, kRepo));
    auto missing = virt::check_checkpoint(guest.domain(), c1);
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->state, virt::CheckpointState::missing);

    // A bitmap lost behind libvirt's back (as after a QEMU crash): the health check says
    // broken, libvirt refuses the incremental, and the checkpoint can still be deleted.
    ASSERT_TRUE(remove_bitmap_behind_libvirts_back(guest, "vdb", c2));
    auto broken = virt::check_checkpoint(guest.domain(), c2);
    ASSERT_TRUE(broken) << broken.error().message();
    EXPECT_EQ(broken->state, virt::CheckpointState::broken);
    EXPECT_NE(broken->reason.find("vdb"), std::string::npos) << broken->reason;
    auto refused = BackupJob::prepare(
        guest.domain(),
        {.disks = {"vda", "vdb"}, .scratch_dir = scratch_dir(guest), .incremental_from = c2});
    ASSERT_TRUE(refused) << refused.error().message();
    auto begun = refused->begin();
    ASSERT_FALSE(begun);
    EXPECT_NE(begun.error().message().find("take a full backup"), std::string::npos)
        << begun.error().message();
    auto deleted = virt::delete_checkpoint(guest.domain(), c2, kRepo);
    ASSERT_TRUE(deleted) << deleted.error().message();
    auto none = virt::list_checkpoints(guest.domain());
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
}

TEST(backup_job, FailedBackupLeavesNoCheckpointOrScratch) {
    LabGuest guest = boot({});
    auto checkpoints = [&] {
        auto list = virt::list_checkpoints(guest.domain());
        return list ? list->size() : 999u;
    };

    // 1. Begin fails (incremental from a checkpoint that does not exist).
    {
        std::string ghost = checkpoint_name();
        auto job = BackupJob::prepare(guest.domain(), {.disks = {"vda"},
                                                       .scratch_dir = scratch_dir(guest),
                                                       .incremental_from = ghost,
                                                       .new_checkpoint = checkpoint_name()});
        ASSERT_TRUE(job) << job.error().message();
        EXPECT_FALSE(dir_empty(scratch_dir(guest))) << "scratch is pre-created by prepare";
        auto begun = job->begin();
        ASSERT_FALSE(begun);
        EXPECT_NE(begun.error().message().find("take a full backup"), std::string::npos)
            << begun.error().message();
    }
    EXPECT_EQ(checkpoints(), 0u);
    EXPECT_TRUE(dir_empty(scratch_dir(guest)));
    EXPECT_EQ(run_dirs_of(guest), 0);

    // 2. The copy fails after begin: abort() deletes the checkpoint made with the job.
    {
        BackupJob job = begin_job(guest, {.disks = {"vda"}, .new_checkpoint = checkpoint_name()});
        EXPECT_EQ(checkpoints(), 1u);
        auto aborted = job.abort();
        ASSERT_TRUE(aborted) << aborted.error().message();
        EXPECT_FALSE(backup_job_running(guest));
        EXPECT_EQ(checkpoints(), 0u);
        EXPECT_TRUE(dir_empty(scratch_dir(guest)));
    }

    // 3. A job dropped without finish() is a failed backup too.
    {
        BackupJob job = begin_job(guest, {.disks = {"vda"}, .new_checkpoint = checkpoint_name()});
        EXPECT_TRUE(backup_job_running(guest));
    }
    EXPECT_FALSE(backup_job_running(guest));
    EXPECT_EQ(checkpoints(), 0u);
    EXPECT_TRUE(dir_empty(scratch_dir(guest)));
    EXPECT_EQ(run_dirs_of(guest), 0);
}

// Not a test of its own: the child process of LeftoverJobAfterKillIsFoundAndEnded. It
// begins a job, says so, and waits to be killed.
TEST(backup_job_child, DISABLED_BeginAndWaitToBeKilled) {
    const char* env = std::getenv(kChildEnv);
    if (!env) GTEST_SKIP() << "run by LeftoverJobAfterKillIsFoundAndEnded only";
    std::string arg = env;
    auto bar1 = arg.find('|');
    auto bar2 = arg.find('|', bar1 + 1);
    auto conn = virt::Connection::open(lab::lab_uri());
    ASSERT_TRUE(conn);
    auto domain = conn->lookup(arg.substr(0, bar1));
    ASSERT_TRUE(domain);
    auto job = BackupJob::prepare(*domain, {.disks = {"vda"},
                                            .scratch_dir = arg.substr(bar1 + 1, bar2 - bar1 - 1),
                                            .new_checkpoint = arg.substr(bar2 + 1)});
    ASSERT_TRUE(job) << job.error().message();
    ASSERT_TRUE(job->begin());
    std::printf("BEGUN\n");
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(120));
}

TEST(backup_job, LeftoverJobAfterKillIsFoundAndEnded) {
    LabGuest guest = boot({});
    std::string chk = checkpoint_name();
    std::string arg = guest.name() + "|" + scratch_dir(guest).string() + "|" + chk;

    // A vmshadow process begins a backup and is killed with SIGKILL.
    int out[2];
    ASSERT_EQ(::pipe(out), 0);
    UniqueFd out_read(out[0]), out_write(out[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
    posix_spawn_file_actions_addclose(&actions, out_read.get());
    std::string env_entry = std::string(kChildEnv) + "=" + arg;
    std::vector<char*> envp;
    for (char** e = environ; *e; ++e) envp.push_back(*e);
    envp.push_back(env_entry.data());
    envp.push_back(nullptr);
    std::string exe = fs::read_symlink("/proc/self/exe").string();
    std::string filter = "--gtest_filter=backup_job_child.DISABLED_BeginAndWaitToBeKilled";
    std::string disabled = "--gtest_also_run_disabled_tests";
    char* argv[] = {exe.data(), filter.data(), disabled.data(), nullptr};
    pid_t child = -1;
    ASSERT_EQ(::posix_spawn(&child, exe.c_str(), &actions, nullptr, argv, envp.data()), 0);
    posix_spawn_file_actions_destroy(&actions);
    out_write.reset();
    std::string said;
    char buf[256];
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (said.find("BEGUN") == std::string::npos && Clock::now() < deadline) {
        ssize_t n = ::read(out_read.get(), buf, sizeof buf);
        if (n <= 0) break;
        said.append(buf, static_cast<size_t>(n));
    }
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_NE(said.find("BEGUN"), std::string::npos) << "the child said: " << said;

    // What it left: a running job, the checkpoint made with it, scratch, its run directory.
    EXPECT_TRUE(backup_job_running(guest));
    auto found = virt::find_checkpoint(guest.domain(), chk);
    ASSERT_TRUE(found && found->has_value());
    EXPECT_FALSE(dir_empty(scratch_dir(guest)));
    EXPECT_EQ(run_dirs_of(guest), 1);

    auto report = virt::end_leftover_backup(guest.domain(), scratch_dir(guest));
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->job_ended);
    EXPECT_EQ(report->checkpoints_deleted, std::vector<std::string>{chk});
    EXPECT_TRUE(report->foreign_job.empty());
    EXPECT_FALSE(backup_job_running(guest));
    found = virt::find_checkpoint(guest.domain(), chk);
    ASSERT_TRUE(found);
    EXPECT_FALSE(found->has_value());
    EXPECT_TRUE(dir_empty(scratch_dir(guest)));
    EXPECT_EQ(run_dirs_of(guest), 0);

    // A live job of ours is not a leftover: the finder refuses to touch it (a conflict, exit 6).
    BackupJob live = begin_job(guest, {.disks = {"vda"}});
    auto busy = virt::end_leftover_backup(guest.domain(), scratch_dir(guest));
    ASSERT_FALSE(busy);
    EXPECT_EQ(busy.error().kind(), ErrorKind::conflict) << busy.error().message();
    EXPECT_TRUE(backup_job_running(guest));
    ASSERT_TRUE(live.finish());
}

TEST(backup_job, ForeignCheckpointIsNeverTouched) {
    LabGuest guest = boot({});
    // Another tool's checkpoint and job.
    const char* foreign_xml =
        "<domaincheckpoint><name>othertool.1</name><disks><disk name='vda' "
        "checkpoint='bitmap'/></disks></domaincheckpoint>";
    virt::CheckpointHandle foreign(
        virDomainCheckpointCreateXML(guest.domain().raw(), foreign_xml, 0));
    ASSERT_TRUE(foreign) << virt::libvirt_error("libvirt").message();
    std::string other_repo = checkpoint_name(kOtherRepo);
    BackupJob other = begin_job(guest, {.disks = {"vda"}, .new_checkpoint = other_repo});
    ASSERT_TRUE(other.finish());

    auto list = virt::list_checkpoints(guest.domain());
    ASSERT_TRUE(list) << list.error().message();
    ASSERT_EQ(list->size(), 2u);
    for (const auto& c : *list) {
        if (c.name == "othertool.1") {
            EXPECT_FALSE(c.ours());
        } else {
            EXPECT_EQ(c.name, other_repo);
            EXPECT_EQ(c.repo, std::string(kOtherRepo).substr(0, 8));
        }
    }
    // Neither is ours to delete.
    auto refused = virt::delete_checkpoint(guest.domain(), "othertool.1", kRepo);
    EXPECT_FALSE(refused);
    EXPECT_FALSE(virt::delete_own_checkpoint(guest.domain(), "othertool.1"));
    EXPECT_FALSE(virt::delete_checkpoint(guest.domain(), other_repo, kRepo));

    // A backup job of another tool is left running by the leftover finder.
    fs::path foreign_dir = guest.dir() / "othertool";
    fs::create_directories(foreign_dir);
    std::string xml = "<domainbackup mode='pull'><server transport='unix' socket='" +
                      (foreign_dir / "nbd.sock").string() +
                      "'/><disks><disk name='vda' backup='yes' type='file'><scratch file='" +
                      (foreign_dir / "scratch.qcow2").string() +
                      "'/></disk></disks></domainbackup>";
    ASSERT_EQ(virDomainBackupBegin(guest.domain().raw(), xml.c_str(), nullptr, 0), 0)
        << virt::libvirt_error("libvirt").message();
    auto report = virt::end_leftover_backup(guest.domain(), scratch_dir(guest));
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_FALSE(report->job_ended);
    EXPECT_FALSE(report->foreign_job.empty());
    EXPECT_TRUE(backup_job_running(guest)) << "the finder ended another tool's job";
    ASSERT_EQ(virDomainAbortJob(guest.domain().raw()), 0);

    // A failed backup of ours deletes only its own checkpoint.
    for (int i = 0; i < 100 && backup_job_running(guest); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    {
        BackupJob failed =
            begin_job(guest, {.disks = {"vda"}, .new_checkpoint = checkpoint_name()});
        ASSERT_TRUE(failed.abort());
    }
    list = virt::list_checkpoints(guest.domain());
    ASSERT_TRUE(list);
    EXPECT_EQ(list->size(), 2u) << "a foreign checkpoint was deleted";
}

TEST(backup_job, RawDiskGetsNoCheckpointButIsExported) {
    LabGuest guest = boot({.data_disks = {{DataDisk::Kind::ext4, "64M"}}, .root_format = "raw"});
    std::string c1 = checkpoint_name();
    BackupJob full = begin_job(guest, {.disks = {"vda", "vdb"}, .new_checkpoint = c1});
    EXPECT_NE(full.checkpoint_xml().find("name=\"vda\" checkpoint=\"no\""), std::string::npos)
        << full.checkpoint_xml();
    fs::path vda = guest.dir() / "export-vda.raw";
    auto root = read_export(full, "vda", vda);
    ASSERT_TRUE(root) << root.error().message();
    std::string image = read_host_file(vda);
    ASSERT_EQ(image.size(), 256u << 20);
    EXPECT_EQ(static_cast<unsigned char>(image[1024 + 56]), 0x53) << "no ext4 superblock";
    EXPECT_EQ(static_cast<unsigned char>(image[1024 + 57]), 0xef);
    ASSERT_TRUE(full.finish());

    auto info = virt::find_checkpoint(guest.domain(), c1);
    ASSERT_TRUE(info && info->has_value());
    for (const auto& d : (*info)->disks) {
        EXPECT_EQ(d.bitmap.empty(), d.target == "vda") << d.target;
    }

    // An incremental reads the raw disk in full and the qcow2 disk by its bitmap.
    BackupJob incr = begin_job(
        guest,
        {.disks = {"vda", "vdb"}, .incremental_from = c1, .new_checkpoint = checkpoint_name()});
    EXPECT_FALSE(incr.find_export("vda")->incremental);
    EXPECT_TRUE(incr.find_export("vda")->bitmap.empty());
    EXPECT_TRUE(incr.find_export("vdb")->incremental);
    auto again = read_export(incr, "vda", vda);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(again->data + again->zero, 256u << 20);
    ASSERT_TRUE(incr.finish());
}

TEST(backup_job, ScratchUsageIsReported) {
    LabGuest guest = boot({.data_disks = {{DataDisk::Kind::ext4, "64M"}}});
    auto wrote = guest.exec(
        "dd if=/dev/urandom of=/data/vdb/big bs=1M count=8 2>/dev/null && sync && echo ok");
    ASSERT_TRUE(wrote) << wrote.error().message();

    BackupJob job = begin_job(guest, {.disks = {"vda", "vdb"}});
    const std::uint64_t limit = 2u << 20;
    job.set_scratch_limit(limit);
    auto armed = job.set_scratch_threshold("vdb", limit);
    ASSERT_TRUE(armed) << armed.error().message();
    auto first = job.poll_scratch();
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_FALSE(first->crossed);
    EXPECT_LT(first->used, limit);
    EXPECT_EQ(first->total, (256u << 20) + (64u << 20));

    // The guest overwrites data that existed at the point in time: copy-before-write moves
    // the old data to scratch.
    auto overwrite = guest.exec(
        "dd if=/dev/urandom of=/data/vdb/big bs=1M count=8 conv=notrunc 2>/dev/null && sync && "
        "echo ok");
    ASSERT_TRUE(overwrite) << overwrite.error().message();
    virt::ScratchStatus last;
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
        auto s = job.poll_scratch();
        ASSERT_TRUE(s) << s.error().message();
        last = *s;
        if (last.crossed) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::printf("[backup] scratch: used %.1f MiB on the host, copied %.1f MiB, limit %.1f MiB\n",
                last.used / 1048576.0, last.copied / 1048576.0, limit / 1048576.0);
    EXPECT_TRUE(last.crossed);
    EXPECT_GE(last.used, limit);
    EXPECT_GE(last.copied, 8u << 20);
    auto used = job.scratch_used();
    ASSERT_TRUE(used);
    EXPECT_GE(*used, limit);
    // The caller's answer to a crossing: abort before the guest sees an error.
    ASSERT_TRUE(job.abort());
    EXPECT_TRUE(dir_empty(scratch_dir(guest)));
}

TEST(backup_job, ShutOffVmCheckpointIsCheckedAndDeletedWithQemuImg) {
    LabGuest guest = boot({});
    std::string c1 = checkpoint_name();
    BackupJob job = begin_job(guest, {.disks = {"vda"}, .new_checkpoint = c1});
    ASSERT_TRUE(job.finish());

    // A clean shutdown writes the bitmap into the qcow2.
    ASSERT_EQ(virDomainShutdown(guest.domain().raw()), 0);
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (virDomainIsActive(guest.domain().raw()) == 1 && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ASSERT_NE(virDomainIsActive(guest.domain().raw()), 1) << "the guest did not shut down";
    auto bitmaps = virt::image_bitmaps(guest.disk_path("vda"), false);
    ASSERT_TRUE(bitmaps) << bitmaps.error().message();
    ASSERT_EQ(bitmaps->size(), 1u);
    EXPECT_EQ((*bitmaps)[0].name, c1);
    EXPECT_FALSE((*bitmaps)[0].in_use);

    auto health = virt::check_checkpoint(guest.domain(), c1);
    ASSERT_TRUE(health) << health.error().message();
    EXPECT_TRUE(health->usable()) << health->reason;
    auto report = virt::end_leftover_backup(guest.domain(), scratch_dir(guest));
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_FALSE(report->job_ended);

    // Offline delete: metadata through libvirt, the bitmap through qemu-img.
    auto deleted = virt::delete_checkpoint(guest.domain(), c1, kRepo);
    ASSERT_TRUE(deleted) << deleted.error().message();
    auto list = virt::list_checkpoints(guest.domain());
    ASSERT_TRUE(list);
    EXPECT_TRUE(list->empty());
    bitmaps = virt::image_bitmaps(guest.disk_path("vda"), false);
    ASSERT_TRUE(bitmaps);
    EXPECT_TRUE(bitmaps->empty()) << "an orphan bitmap stayed in the image";
}

}  // namespace
}  // namespace vmshadow
