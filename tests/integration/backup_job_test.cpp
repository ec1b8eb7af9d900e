// SPDX-License-Identifier: MIT
// The libvirt live-backup provider on real TCG guests: BackupJob (pull-mode backup with
// pre-created scratch, checkpoints created with the job), the NBD export reader (full and
// dirty-bitmap walks, ordered parallel reads), checkpoints (naming, listing, deleting,
// health), failure cleanup, leftovers of a killed process, foreign jobs and checkpoints,
// raw disks, and scratch watching.
#include "virt/backup_job.h"

#include <fcntl.h>
#include <gtest/gtest.h>
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
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "lab/lab_guest.h"
#include "lab/lab_process.h"
#include "virt/checkpoints.h"
#include "virt/nbd_export.h"

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
    auto begun = job.begin();
    int thawed = virDomainFSThaw(guest.domain().raw(), nullptr, 0, 0);
    ASSERT_TRUE(begun) << begun.error().message();
    EXPECT_EQ(thawed, frozen);
}

TEST(BackupJob, FullPullBackupExportsPointInTimeImage) {
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

}  // namespace
}  // namespace vmshadow
