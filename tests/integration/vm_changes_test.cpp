// SPDX-License-Identifier: MIT
// Change reads (engine/vm_changes.h) on a real guest: what they deliver, applied to zeroed
// raw files, equals the disks — after a full read, after incrementals, with a repository's
// backups taking checkpoints of their own chain in between, and after the guest shut down.
// Each live read is taken with the guest's filesystems frozen (flushed, no writes), so the
// images read with `qemu-img convert -U` right after hold what the read saw.
#include "engine/vm_changes.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <thread>

#include "integration/vm_backup_fixture.h"
#include "virt/checkpoints.h"
#include "virt/qemu_img.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

// Applies delivered extents to one raw file per disk (created zeroed at begin), and checks
// the order the contract promises.
class RawFileSink final : public engine::ChangeSink {
  public:
    explicit RawFileSink(fs::path dir) : dir_(std::move(dir)) {}
    ~RawFileSink() override {
        for (auto& [_, fd] : fds_) ::close(fd);
    }

    Status begin(const engine::ChangeSet& set) override {
        set_ = set;
        for (const auto& d : set.disks) {
            fs::path path = file(d.target);
            int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
            if (fd < 0) return fail(ErrorKind::io, "open " + path.string());
            if (::ftruncate(fd, static_cast<off_t>(d.size)) != 0)
                return fail(ErrorKind::io, "truncate " + path.string());
            fds_.push_back({d.target, fd});
            next_.push_back(0);
        }
        return {};
    }
    Status data(std::size_t disk, std::uint64_t offset, std::span<const std::byte> bytes) override {
        if (auto st = in_order(disk, offset, bytes.size()); !st) return st;
        data_bytes += bytes.size();
        if (::pwrite(fds_[disk].second, bytes.data(), bytes.size(), static_cast<off_t>(offset)) !=
            static_cast<ssize_t>(bytes.size()))
            return fail(ErrorKind::io, "pwrite");
        return {};
    }
    Status zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) override {
        if (auto st = in_order(disk, offset, length); !st) return st;
        if (::fallocate(fds_[disk].second, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(offset), static_cast<off_t>(length)) != 0)
            return fail(ErrorKind::io, "punch hole");
        return {};
    }
    Status commit() override {
        for (auto& [_, fd] : fds_) ::close(fd);
        fds_.clear();
        committed = true;
        return {};
    }

    fs::path file(const std::string& target) const { return dir_ / (target + ".raw"); }
    const engine::ChangeSet& set() const { return set_; }
    std::uint64_t data_bytes = 0;
    bool committed = false;

  private:
    Status in_order(std::size_t disk, std::uint64_t offset, std::uint64_t length) {
        if (disk >= next_.size() || disk < current_)
            return fail(ErrorKind::internal, "disks out of order");
        current_ = disk;
        if (offset < next_[disk]) return fail(ErrorKind::internal, "extents out of order");
        next_[disk] = offset + length;
        if (next_[disk] > set_.disks[disk].size)
            return fail(ErrorKind::internal, "extent past the disk's end");
        return {};
    }

    fs::path dir_;
    engine::ChangeSet set_;
    std::vector<std::pair<std::string, int>> fds_;
    std::vector<std::uint64_t> next_;
    std::size_t current_ = 0;
};

class VmChangesTest : public VmBackupTest {
  protected:
    void SetUp() override {
        // As vmshadow and vmshadowd do: the freeze's thaw guardian is told over a pipe that
        // may be closed already (a broken pipe is an error value, not a signal).
        ::signal(SIGPIPE, SIG_IGN);
        VmBackupTest::SetUp();
    }

    // Where the delivered disks accumulate, read after read.
    fs::path applied() const { return dir / "applied"; }

    engine::ChangeReadOutcome read(lab::LabGuest& g, const std::string& previous_xml,
                                   RawFileSink& sink, bool application) {
        engine::ChangeReadOptions o;
        o.vm = g.name();
        o.chain_id = chain_id;
        o.previous_checkpoint_xml = previous_xml;
        o.scratch_dir = scratch.string();
        o.application_consistent = application;
        auto outcome = engine::read_vm_changes(g.connection(), o, sink);
        if (!outcome) throw std::runtime_error("change read: " + outcome.error().message());
        EXPECT_TRUE(sink.committed);
        return std::move(*outcome);
    }

    // The image of `target` as a raw file now (-U: a running VM may hold it).
    fs::path image_now(lab::LabGuest& g, const std::string& target) {
        fs::path out = dir / ("image-" + target + ".raw");
        fs::remove(out);
        auto r = lab::run_checked(
            {"qemu-img", "convert", "-U", "-O", "raw", g.disk_path(target).string(), out.string()});
        if (!r) throw std::runtime_error("qemu-img convert: " + r.error().message());
        return out;
    }

    static bool same_file(const fs::path& a, const fs::path& b) {
        auto r = lab::run_process({"cmp", "--quiet", a.string(), b.string()});
        return r && r->exit_code == 0;
    }

    // Every disk of the applied files equals the image now.
    void expect_applied_equals_disks(lab::LabGuest& g) {
        for (const std::string target : {"vda", "vdb"})
            EXPECT_TRUE(same_file(applied() / (target + ".raw"), image_now(g, target)))
                << target << " differs from what the reads delivered";
    }

    // A change read whose extents are applied onto applied(); returns the outcome.
    engine::ChangeReadOutcome read_and_apply(lab::LabGuest& g, const std::string& previous_xml,
                                             std::uint64_t& data_bytes, bool application = false) {
        RawFileSink sink(applied());
        auto outcome = read(g, previous_xml, sink, application);
        data_bytes = sink.data_bytes;
        EXPECT_EQ(outcome.bytes_read, sink.data_bytes);
        return outcome;
    }

    void write_in_guest(lab::LabGuest& g, const std::string& tag) {
        auto r = g.exec("head -c 1048576 /dev/urandom > /var/lib/lab/" + tag +
                        " && head -c 524288 /dev/urandom > /data/vdb/" + tag + " && sync");
        ASSERT_TRUE(r) << r.error().message();
    }

    std::vector<std::string> chain_checkpoints(const lab::LabGuest& g) const {
        std::vector<std::string> out;
        for (const auto& c : checkpoints(g))
            if (virt::checkpoint_belongs_to(c, chain_id)) out.push_back(c);
        return out;
    }

    const std::string chain_id = "c4a1e0f2d3b49687";
};

bool wait_shutoff(const lab::LabGuest& g, std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(250ms)) {
        auto s = g.domain().state();
        if (s && *s == virt::DomainState::shutoff) return true;
    }
    return false;
}

TEST_F(VmChangesTest, ReadsRebuildTheDisksThroughIncrementalsBackupsAndAShutdown) {
    lab::LabGuest& g = boot({.data_disks = {lab::DataDisk{}}});
    fs::create_directories(applied());
    std::uint64_t bytes = 0;

    // (a) A full read equals the disks.
    engine::ChangeReadOutcome full;
    {
        FrozenGuest frozen(g);
        full = read_and_apply(g, "", bytes);
        expect_applied_equals_disks(g);
    }
    ASSERT_EQ(full.set.disks.size(), 2u);
    for (const auto& d : full.set.disks) EXPECT_FALSE(d.incremental) << d.target;
    EXPECT_FALSE(full.set.base);
    EXPECT_TRUE(virt::checkpoint_belongs_to(full.set.checkpoint, chain_id));
    EXPECT_NE(full.checkpoint_xml.find(full.set.checkpoint), std::string::npos);
    EXPECT_EQ(full.set.consistency, "crash");

    // (b) After writes: an incremental delivers the changes, far fewer bytes than the disks.
    write_in_guest(g, "one");
    engine::ChangeReadOutcome second;
    {
        FrozenGuest frozen(g);
        second = read_and_apply(g, full.checkpoint_xml, bytes);
        expect_applied_equals_disks(g);
    }
    EXPECT_EQ(second.set.base, full.set.checkpoint);
    for (const auto& d : second.set.disks) EXPECT_TRUE(d.incremental) << d.target << d.full_reason;
    EXPECT_GE(bytes, 1536u * 1024);
    EXPECT_LT(bytes, (256ull << 20) / 8) << "an incremental read nearly the whole disk";
    EXPECT_EQ(chain_checkpoints(g), std::vector<std::string>{second.set.checkpoint})
        << "the chain's superseded checkpoint was not retired";

    // (c) A repository's backups between change reads break neither chain.
    json backup1 = backup_ok({g.name()});
    write_in_guest(g, "two");
    engine::ChangeReadOutcome third;
    {
        FrozenGuest frozen(g);
        third = read_and_apply(g, second.checkpoint_xml, bytes);
        expect_applied_equals_disks(g);
    }
    EXPECT_EQ(third.set.base, second.set.checkpoint);
    for (const auto& d : third.set.disks) EXPECT_TRUE(d.incremental) << d.target << d.full_reason;
    json backup2 = backup_ok({g.name()});
    EXPECT_EQ(backup2["incremental_from"], backup1["checkpoint"]) << backup2.dump(2);
    EXPECT_EQ(mode_of(backup2, "vda"), "incremental");

    // Asked for, application consistency is the agent's freeze.
    auto consistent = read_and_apply(g, third.checkpoint_xml, bytes, true);
    EXPECT_EQ(consistent.set.consistency, "application");
    EXPECT_TRUE(consistent.freeze_ms);
    EXPECT_EQ(freeze_status(g), "thawed");

    // (d) Written, then shut down: an offline read delivers what changed since the last one.
    write_in_guest(g, "three");
    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "shutdown", g.name()}));
    ASSERT_TRUE(wait_shutoff(g, 120s));
    auto offline = read_and_apply(g, consistent.checkpoint_xml, bytes);
    expect_applied_equals_disks(g);
    EXPECT_EQ(offline.set.base, consistent.set.checkpoint);
    EXPECT_EQ(offline.set.checkpoint, consistent.set.checkpoint)
        << "a shut-off VM got a checkpoint";
    EXPECT_EQ(offline.checkpoint_xml, consistent.checkpoint_xml);
    for (const auto& d : offline.set.disks) EXPECT_TRUE(d.incremental) << d.target << d.full_reason;
    EXPECT_GE(bytes, 1536u * 1024);
    EXPECT_LT(bytes, (256ull << 20) / 8);
    for (const std::string target : {"vda", "vdb"}) {
        auto bitmaps = virt::image_bitmaps(g.disk_path(target).string(), false);
        ASSERT_TRUE(bitmaps);
        for (const auto& b : *bitmaps)
            EXPECT_EQ(b.name.find("vmshadow-changes-"), std::string::npos)
                << target << ": the merged bitmap was left";
    }

    // delete_chain removes this chain's checkpoints only.
    ASSERT_TRUE(engine::delete_chain(g.connection(), g.name(), chain_id));
    EXPECT_TRUE(chain_checkpoints(g).empty());
    auto left = checkpoints(g);
    EXPECT_NE(std::find(left.begin(), left.end(), backup2["checkpoint"].get<std::string>()),
              left.end())
        << "the repository's checkpoint went with the chain";
}

// A sink that fails at commit: the other side could not make the changes durable.
class FailingCommitSink final : public engine::ChangeSink {
  public:
    Status begin(const engine::ChangeSet&) override { return {}; }
    Status data(std::size_t, std::uint64_t, std::span<const std::byte>) override { return {}; }
    Status zero(std::size_t, std::uint64_t, std::uint64_t) override { return {}; }
    Status commit() override { return fail(ErrorKind::unavailable, "replica went away"); }
};

TEST_F(VmChangesTest, WithoutAnAgentAFailedCommitLeavesThePreviousCheckpointToContinueFrom) {
    lab::LabGuest& g = boot({.agent_channel = false});
    fs::create_directories(applied());
    std::uint64_t bytes = 0;
    auto first = read_and_apply(g, "", bytes, true);
    EXPECT_EQ(first.set.consistency, "crash");
    bool said = false;
    for (const auto& n : first.notes)
        said = said || n.find("application consistency asked") != std::string::npos;
    EXPECT_TRUE(said) << "no note says why the read is crash-consistent";

    engine::ChangeReadOptions o;
    o.vm = g.name();
    o.chain_id = chain_id;
    o.previous_checkpoint_xml = first.checkpoint_xml;
    o.scratch_dir = scratch.string();
    FailingCommitSink failing;
    auto failed = engine::read_vm_changes(g.connection(), o, failing);
    ASSERT_FALSE(failed);
    EXPECT_NE(failed.error().message().find("replica went away"), std::string::npos);
    EXPECT_EQ(chain_checkpoints(g), std::vector<std::string>{first.set.checkpoint})
        << "the failed read's checkpoint was kept, or the previous one deleted";
    EXPECT_TRUE(scratch_leftovers().empty());

    auto again = read_and_apply(g, first.checkpoint_xml, bytes);
    EXPECT_EQ(again.set.base, first.set.checkpoint);
    for (const auto& d : again.set.disks) EXPECT_TRUE(d.incremental) << d.target << d.full_reason;

    // Shut off: a refused commit leaves no merged bitmap behind, and the read can be repeated.
    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "shutdown", g.name()}));
    ASSERT_TRUE(wait_shutoff(g, 120s));
    o.previous_checkpoint_xml = again.checkpoint_xml;
    ASSERT_FALSE(engine::read_vm_changes(g.connection(), o, failing));
    auto bitmaps = virt::image_bitmaps(g.disk_path("vda").string(), false);
    ASSERT_TRUE(bitmaps);
    for (const auto& b : *bitmaps)
        EXPECT_EQ(b.name.find("vmshadow-changes-"), std::string::npos) << "merged bitmap left";
    auto offline = read_and_apply(g, again.checkpoint_xml, bytes);
    EXPECT_EQ(offline.set.base, again.set.checkpoint);
    for (const auto& d : offline.set.disks) EXPECT_TRUE(d.incremental) << d.target << d.full_reason;
    EXPECT_EQ(chain_checkpoints(g), std::vector<std::string>{again.set.checkpoint});
}

}  // namespace
}  // namespace vmshadow::testing
