// SPDX-License-Identifier: MIT
// What a restore does with the path it is given (issue 13, items 2 and 5), with the real
// binary and small image files: a character device, FIFO, socket, directory or symbolic link
// is refused with exit 2 and left exactly as it was, --force or not; a block device (a loop
// device) is written into, byte for byte, holes zeroed; and an image of any size — 0, 1,
// 65537, 1000000 bytes… — comes back with exactly that size and those bytes. A VM restore
// --to a folder where a disk's file is a FIFO, a directory or a link is refused the same way,
// and --instant never overwrites a file that is there; in place, a directory where the disk
// is first written is refused before the running VM is touched.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "integration/cli_runner.h"
#include "integration/vm_backup_fixture.h"
#include "lab/lab_process.h"
#include "virt/domain.h"

namespace vmshadow::testing {
namespace {

std::string read_bytes(const fs::path& path, std::uint64_t n = UINT64_MAX) {
    std::ifstream in(path, std::ios::binary);
    std::string out;
    char buf[65536];
    while (out.size() < n && in.read(buf, static_cast<std::streamsize>(
                                              std::min<std::uint64_t>(sizeof buf, n - out.size())))
                                     .gcount() > 0)
        out.append(buf, static_cast<std::size_t>(in.gcount()));
    return out;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// `size` bytes of random data with a 192 KiB hole in the middle when the image is big enough,
// so restores see data chunks, hole chunks and a short last chunk.
std::string image_bytes(std::uint64_t size, unsigned seed) {
    std::mt19937 gen(seed);
    std::string s(size, '\0');
    for (auto& c : s) c = static_cast<char>(gen() | 1);
    if (size > 4 * 65536) std::fill_n(s.begin() + 65536, 3 * 65536, '\0');
    return s;
}

// A loop device over a file, detached even when the test fails. `device` is a private node
// of it in the test's folder (mknod, same numbers), so a restore that wrongly replaced its
// target would replace that node, never the host's /dev/loopN.
struct LoopDevice {
    std::string loop, device;
    LoopDevice(const fs::path& backing, const fs::path& node) {
        auto r = lab::run_checked({"losetup", "--find", "--show", backing.string()});
        if (!r) return;
        loop = r->substr(0, r->find('\n'));
        struct stat st {};
        if (::stat(loop.c_str(), &st) == 0 && S_ISBLK(st.st_mode) &&
            ::mknod(node.c_str(), S_IFBLK | 0600, st.st_rdev) == 0)
            device = node.string();
    }
    ~LoopDevice() {
        if (!loop.empty()) (void)lab::run_process({"losetup", "-d", loop});
    }
};

// What a path is, to compare before and after.
struct Snapshot {
    bool exists = false;
    mode_t mode = 0;
    dev_t rdev = 0;
    ino_t ino = 0;
    std::string link;
    std::vector<std::string> entries;
    bool operator==(const Snapshot&) const = default;
};

Snapshot snapshot(const fs::path& p) {
    Snapshot s;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return s;
    s.exists = true;
    s.mode = st.st_mode;
    s.rdev = st.st_rdev;
    s.ino = st.st_ino;
    std::error_code ec;
    if (S_ISLNK(st.st_mode)) s.link = fs::read_symlink(p, ec).string();
    if (S_ISDIR(st.st_mode))
        for (const auto& e : fs::directory_iterator(p, ec)) s.entries.push_back(e.path().string());
    std::sort(s.entries.begin(), s.entries.end());
    return s;
}

class RestoreTargetTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/vmshadow-rtarget-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        repo = dir / "repo";
        auto init = run({"repo", "init", repo.string()});
        ASSERT_EQ(init.exit_code, 0) << init.err;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    lab::ProcessOutput run(std::vector<std::string> args) {
        std::vector<std::string> full{"--repo", repo.string()};
        full.insert(full.end(), args.begin(), args.end());
        return run_vmshadow(full);
    }
    // Backs up `bytes` as an image file named NAME; returns the file's path.
    fs::path backup(const std::string& name, const std::string& bytes) {
        fs::path file = dir / (name + ".raw");
        write_bytes(file, bytes);
        auto b = run({"image", "backup", file.string(), "--name", name});
        EXPECT_EQ(b.exit_code, 0) << b.out << b.err;
        return file;
    }
    // Nothing of a restore's temp files is left in the scratch folder.
    std::vector<std::string> partial_files() const {
        std::vector<std::string> out;
        for (const auto& e : fs::recursive_directory_iterator(dir))
            if (e.path().string().find(".vmshadow-partial") != std::string::npos)
                out.push_back(e.path().string());
        return out;
    }
    fs::path dir, repo;
};

TEST_F(RestoreTargetTest, RestoreRefusesEveryTargetThatIsNotARegularFileOrBlockDevice) {
    backup("img", image_bytes(300000, 1));
    fs::path targets = dir / "targets";
    fs::create_directories(targets);
    fs::path chr = targets / "null";
    ASSERT_EQ(::mknod(chr.c_str(), S_IFCHR | 0666, makedev(1, 3)), 0) << "mknod";
    fs::path fifo = targets / "fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
    fs::path empty_dir = targets / "empty-dir";
    fs::create_directories(empty_dir);
    fs::path full_dir = targets / "full-dir";
    fs::create_directories(full_dir);
    write_bytes(full_dir / "keep.txt", "keep");
    fs::path pointee = targets / "pointee.txt";
    write_bytes(pointee, "the file a link points to");
    fs::path link = targets / "link";
    fs::create_symlink(pointee, link);
    fs::path dangling = targets / "dangling";
    fs::create_symlink(targets / "nowhere", dangling);
    fs::path dir_link = targets / "dir-link";
    fs::create_symlink(full_dir, dir_link);
    fs::path sock = targets / "sock";
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);

    for (const fs::path& target :
         {chr, fifo, empty_dir, full_dir, link, dangling, dir_link, sock}) {
        for (const std::vector<std::string>& extra : std::vector<std::vector<std::string>>{
                 {}, {"--force"}, {"--format", "qcow2"}, {"--format", "qcow2", "--force"}}) {
            Snapshot before = snapshot(target);
            std::vector<std::string> args{"image", "restore", "img@latest", target.string()};
            args.insert(args.end(), extra.begin(), extra.end());
            auto r = run(args);
            std::string what = target.string() + (extra.empty() ? "" : " " + extra.front()) +
                               (extra.size() > 1 ? " " + extra.back() : "");
            EXPECT_EQ(r.exit_code, 2) << what << ": " << r.out << r.err;
            EXPECT_NE(r.err.find(target.string()), std::string::npos) << what << ": " << r.err;
            EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
            EXPECT_TRUE(snapshot(target) == before) << what << " was changed";
        }
    }
    struct stat st {};
    ASSERT_EQ(::lstat(chr.c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(st.st_rdev, makedev(1, 3));
    EXPECT_EQ(read_bytes(pointee), "the file a link points to");
    EXPECT_EQ(read_bytes(full_dir / "keep.txt"), "keep");
    EXPECT_FALSE(fs::exists(targets / "nowhere"));
    EXPECT_TRUE(partial_files().empty());
    auto r = run({"image", "restore", "img@latest", (dir / "fifo").string()});
    EXPECT_EQ(r.exit_code, 0) << "a new path is still fine: " << r.err;
}

TEST_F(RestoreTargetTest, RestoreWritesIntoABlockDeviceByteForByteWithHolesZeroed) {
    const std::string bytes = image_bytes(3 * 1024 * 1024 + 12345, 2);
    backup("dev", bytes);
    backup("big", image_bytes(5 * 1024 * 1024, 3));
    // The device's old contents: 0xAA everywhere, so unwritten holes would show.
    fs::path backing = dir / "loop.img";
    write_bytes(backing, std::string(4 * 1024 * 1024, '\xAA'));
    LoopDevice loop(backing, dir / "loop-node");
    ASSERT_FALSE(loop.device.empty()) << "losetup and mknod";
    const std::string old = read_bytes(loop.device);

    auto no_force = run({"image", "restore", "dev@latest", loop.device});
    EXPECT_EQ(no_force.exit_code, 6) << no_force.err;
    auto qcow =
        run({"image", "restore", "dev@latest", loop.device, "--format", "qcow2", "--force"});
    EXPECT_EQ(qcow.exit_code, 2) << qcow.err;
    auto small = run({"image", "restore", "big@latest", loop.device, "--force"});
    EXPECT_EQ(small.exit_code, 2) << small.err;
    EXPECT_NE(small.err.find("smaller"), std::string::npos) << small.err;
    EXPECT_TRUE(read_bytes(loop.device) == old) << "refused restores wrote nothing";

    auto ok = run({"image", "restore", "dev@latest", loop.device, "--force"});
    ASSERT_EQ(ok.exit_code, 0) << ok.err;
    std::string now = read_bytes(loop.device);
    ASSERT_EQ(now.size(), old.size());
    EXPECT_TRUE(now.compare(0, bytes.size(), bytes) == 0) << "the disk's bytes";
    EXPECT_TRUE(now.compare(bytes.size(), std::string::npos, old, bytes.size()) == 0)
        << "past the disk's end the device is as it was";
    struct stat st {};
    ASSERT_EQ(::stat(loop.device.c_str(), &st), 0);
    EXPECT_TRUE(S_ISBLK(st.st_mode));

    // A symbolic link to a block device (LVM's /dev/VG/LV) is followed: the device is written.
    write_bytes(backing, std::string(4 * 1024 * 1024, '\x55'));
    fs::path lv = dir / "lv-link";
    fs::create_symlink(loop.device, lv);
    auto via_link = run({"image", "restore", "dev@latest", lv.string(), "--force"});
    ASSERT_EQ(via_link.exit_code, 0) << via_link.err;
    EXPECT_TRUE(fs::is_symlink(lv));
    EXPECT_TRUE(read_bytes(loop.device, bytes.size()) == bytes);
    EXPECT_TRUE(partial_files().empty());
}

TEST_F(RestoreTargetTest, ImageRoundTripKeepsTheExactSizeAndBytes) {
    for (std::uint64_t size : {std::uint64_t{1}, std::uint64_t{511}, std::uint64_t{65537},
                               std::uint64_t{1000000}, std::uint64_t{5 * 65536}}) {
        const std::string name = "size" + std::to_string(size);
        const std::string bytes = image_bytes(size, static_cast<unsigned>(size));
        backup(name, bytes);
        auto points = run({"points", name, "--json"});
        ASSERT_EQ(points.exit_code, 0) << points.err;
        json list = json::parse(points.out);
        ASSERT_EQ(list.size(), 1u);
        EXPECT_EQ(list[0]["disks"][0]["size"].get<std::uint64_t>(), size) << name;

        fs::path out = dir / (name + ".out");
        auto r = run({"image", "restore", name + "@latest", out.string(), "--json"});
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(json::parse(r.out)["size"].get<std::uint64_t>(), size);
        EXPECT_EQ(fs::file_size(out), size) << name;
        EXPECT_TRUE(read_bytes(out) == bytes) << name;

        // qcow2 sizes are multiples of 512: rounded up, the disk's bytes then zeros.
        fs::path q = dir / (name + ".qcow2");
        auto rq = run({"image", "restore", name + "@latest", q.string(), "--format", "qcow2"});
        ASSERT_EQ(rq.exit_code, 0) << rq.err;
        EXPECT_EQ(rq.out.find("note:") != std::string::npos, size % 512 != 0) << rq.out;
        fs::path back = dir / (name + ".back");
        ASSERT_TRUE(
            lab::run_checked({"qemu-img", "convert", "-O", "raw", q.string(), back.string()}));
        EXPECT_EQ(fs::file_size(back), (size + 511) / 512 * 512) << name;
        std::string round = read_bytes(back);
        EXPECT_TRUE(round.compare(0, size, bytes) == 0) << name;
        EXPECT_EQ(round.find_first_not_of('\0', size), std::string::npos) << name;
    }
}

TEST_F(RestoreTargetTest, AnEmptyImageRoundTripsAsAnEmptyFile) {
    fs::path empty = dir / "empty.raw";
    write_bytes(empty, "");
    auto b = run({"image", "backup", empty.string(), "--name", "empty"});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    auto points = run({"points", "empty", "--json"});
    ASSERT_EQ(points.exit_code, 0) << points.err;
    EXPECT_EQ(json::parse(points.out)[0]["disks"][0]["size"].get<std::uint64_t>(), 0u);
    fs::path out = dir / "empty.out";
    auto r = run({"image", "restore", "empty@latest", out.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(fs::file_size(out), 0u);
}

TEST_F(VmBackupTest, VmRestoreRefusesDiskPathsThatAreNotRegularFilesAndChangesNothing) {
    lab::LabGuest& g = boot({});
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    RestoredVm copy{g.name().substr(0, 40) + "-target", dir / "copy"};
    fs::create_directories(copy.folder);
    const fs::path disk = copy.folder / "root.qcow2";
    auto refused = [&](const std::string& what, std::vector<std::string> extra, int code) {
        Snapshot before = snapshot(disk);
        std::vector<std::string> args{"restore", point,  "--as",
                                      copy.name, "--to", copy.folder.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        auto r = run(args);
        EXPECT_EQ(r.exit_code, code) << what << ": " << r.out << r.err;
        EXPECT_NE(r.err.find(disk.string()), std::string::npos) << what << ": " << r.err;
        EXPECT_TRUE(snapshot(disk) == before) << what << " was changed";
        auto entries = snapshot(copy.folder).entries;
        EXPECT_EQ(entries, std::vector<std::string>{disk.string()}) << what << ": nothing written";
        auto defined = lab::run_process({"virsh", "-c", lab::lab_uri(), "dominfo", copy.name});
        EXPECT_TRUE(defined && defined->exit_code != 0) << what << ": no VM defined";
    };
    ASSERT_EQ(::mkfifo(disk.c_str(), 0644), 0);
    refused("a FIFO", {}, 2);
    refused("a FIFO, --instant", {"--instant"}, 2);
    fs::remove(disk);
    fs::create_directories(disk);
    refused("a directory", {}, 2);
    fs::remove(disk);
    const fs::path elsewhere = dir / "elsewhere.qcow2";
    write_bytes(elsewhere, "someone's disk");
    fs::create_symlink(elsewhere, disk);
    refused("a link", {}, 2);
    fs::remove(disk);
    write_bytes(disk, "someone's disk");
    refused("a regular file, --instant", {"--instant"}, 6);
    EXPECT_TRUE(read_bytes(disk) == "someone's disk");
    EXPECT_TRUE(read_bytes(elsewhere) == "someone's disk");

    // In place, the name a disk is first written to must be free for a file too.
    auto points = run({"points", "--json"});
    ASSERT_EQ(points.exit_code, 0) << points.err;
    const std::string original = json::parse(points.out)[0]["disks"][0]["info"]["path"];
    const fs::path beside = original + ".vmshadow-restore";
    fs::create_directories(beside / "keep");
    auto in_place = run({"restore", point, "--replace"});
    EXPECT_EQ(in_place.exit_code, 2) << in_place.out << in_place.err;
    EXPECT_NE(in_place.err.find(beside.string()), std::string::npos) << in_place.err;
    EXPECT_TRUE(fs::is_directory(beside / "keep"));
    auto state = g.domain().state();
    ASSERT_TRUE(state);
    EXPECT_EQ(*state, virt::DomainState::running) << "the VM was not touched";
    fs::remove_all(beside);
}

}  // namespace
}  // namespace vmshadow::testing
