// SPDX-License-Identifier: MIT
// The restore point export end to end: the real vmshadow binary, nbdkit with the vmshadow
// plugin, nbdfuse, loop devices and mounts. Images are made with mkfs/sfdisk in a temp
// directory, backed up with `vmshadow image backup`, mounted and compared file by file, and
// every test checks that umount leaves nothing behind (processes, sockets, loop devices,
// FUSE mounts, repository locks). The plugin is also driven directly with nbdinfo, nbdcopy
// and qemu-io, including overlay writes that must not change the repository.

#include "export/mount.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "lab/lab_guest.h"
#include "lab/lab_process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using vmshadow::lab::run_checked;
using vmshadow::lab::run_process;

struct CliResult {
    int exit_code = -1;
    std::string out, err;
};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const std::string& path, const std::string& data) {
    std::ofstream out(path, std::ios::binary);
    out << data;
}

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(gen() & 0xff);
    return s;
}

// The plugin beside the binary, as vmshadow finds it.
std::string plugin_path() {
    return (fs::path(VMSHADOW_BINARY).parent_path() / ".." / "export" / "nbdkit-vmshadow-plugin.so")
        .lexically_normal()
        .string();
}

// Processes (not zombies: this host's init does not reap) whose command line mentions `text`.
std::vector<std::string> processes_mentioning(const std::string& text) {
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator("/proc")) {
        std::string pid = e.path().filename();
        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string stat = slurp(e.path() / "stat");
        auto close = stat.rfind(')');
        if (close == std::string::npos || stat.substr(close + 2, 1) == "Z") continue;
        std::string cmd = slurp(e.path() / "cmdline");
        std::replace(cmd.begin(), cmd.end(), '\0', ' ');
        if (cmd.find(text) != std::string::npos) found.push_back(pid + ": " + cmd);
    }
    return found;
}

// Alive and not a zombie.
bool running(pid_t pid) {
    std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
    auto close = stat.rfind(')');
    return close != std::string::npos && stat.substr(close + 2, 1) != "Z";
}

class MountTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/vmshadow-mount-test-XXXXXX";
        dir = mkdtemp(tmpl);
        repo = dir + "/repo";
        env = {"VMSHADOW_REPO=" + repo, "VMSHADOW_PASSWORD="};
        CliResult init = run({"repo", "init", repo});
        ASSERT_EQ(init.exit_code, 0) << init.err;
    }
    void TearDown() override {
        for (const auto& m : mounts) run({"umount", m});  // best effort, also after a failure
        // Also any server of this test whose pid we never learnt (the test failed first).
        for (const auto& p : processes_mentioning(dir))
            servers.push_back(static_cast<pid_t>(std::atol(p.c_str())));
        for (pid_t pid : servers) {
            ::kill(pid, SIGTERM);
            for (int i = 0; i < 100 && running(pid); ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        fs::remove_all(dir);
    }

    CliResult run(const std::vector<std::string>& args) {
        pid_t pid = fork();
        if (pid == 0) {
            setsid();
            int in = open("/dev/null", O_RDONLY);
            int o = open((dir + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            int e = open((dir + "/err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(in, 0);
            dup2(o, 1);
            dup2(e, 2);
            for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
            std::vector<char*> argv{const_cast<char*>(VMSHADOW_BINARY)};
            for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            execv(VMSHADOW_BINARY, argv.data());
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir + "/out"),
                slurp(dir + "/err")};
    }

    // Backs up `image` as series `name`; returns the point id.
    std::string backup(const std::string& image, const std::string& name) {
        CliResult r = run({"image", "backup", image, "--name", name, "--json"});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return r.exit_code == 0 ? json::parse(r.out).at("id").get<std::string>() : "";
    }

    // A directory to mount on; umounted in TearDown whatever happens.
    std::string mount_dir(const std::string& name) {
        std::string m = dir + "/" + name;
        fs::create_directories(m);
        mounts.push_back(m);
        return m;
    }

    // Nothing of a mount on `m` is left.
    void expect_clean(const std::string& m) {
        std::string state = vmshadow::exporter::mount_state_dir(m);
        EXPECT_FALSE(fs::exists(state)) << state;
        EXPECT_TRUE(fs::is_empty(m)) << m;
        std::string mountinfo = slurp("/proc/self/mountinfo");
        EXPECT_EQ(mountinfo.find(m), std::string::npos) << "still mounted: " << m;
        EXPECT_EQ(mountinfo.find(state), std::string::npos) << "FUSE still mounted: " << state;
        EXPECT_EQ(processes_mentioning(state), std::vector<std::string>{});
        auto loops = run_checked({"losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"});
        ASSERT_TRUE(loops);
        EXPECT_EQ(loops->find(state), std::string::npos) << *loops;
        EXPECT_TRUE(fs::is_empty(repo + "/locks")) << "a repository lock is left";
    }

    // Starts nbdkit with the plugin in the background (it forks; its log goes to a file so
    // the daemon holds no pipe of ours); returns the daemon's pid.
    pid_t start_nbdkit(const std::string& socket, const std::vector<std::string>& params) {
        std::string pidfile = socket + ".pid";
        std::string cmd =
            "exec nbdkit --log=stderr -U " + socket + " -P " + pidfile + " " + plugin_path();
        for (const auto& p : params) cmd += " " + p;
        cmd += " </dev/null >/dev/null 2>>" + socket + ".log";
        auto r = run_process({"sh", "-c", cmd});
        EXPECT_TRUE(r && r->exit_code == 0) << slurp(socket + ".log");
        // The daemon writes its pidfile once it listens, after the parent has returned.
        pid_t pid = 0;
        for (int i = 0; i < 500 && pid <= 0; ++i) {
            pid = static_cast<pid_t>(std::atol(slurp(pidfile).c_str()));
            if (pid <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (pid > 0) servers.push_back(pid);
        return pid;
    }

    void stop_nbdkit(pid_t pid) {
        ::kill(pid, SIGTERM);
        for (int i = 0; i < 250; ++i) {
            if (!running(pid)) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        ADD_FAILURE() << "nbdkit " << pid << " did not stop";
    }

    std::string dir, repo;
    std::vector<std::string> env;
    std::vector<std::string> mounts;
    std::vector<pid_t> servers;
};

// A tree of files: text, a multi-chunk random file, a nested directory.
void make_tree(const std::string& root, unsigned seed) {
    fs::create_directories(root + "/sub/deeper");
    spit(root + "/hello.txt", "hello from seed " + std::to_string(seed) + "\n");
    spit(root + "/random.bin", random_bytes(3 * 1024 * 1024 + 17, seed));
    spit(root + "/sub/deeper/small", random_bytes(100, seed + 1));
}

void expect_same_tree(const std::string& expected, const std::string& actual) {
    for (const auto& e : fs::recursive_directory_iterator(expected)) {
        fs::path rel = fs::relative(e.path(), expected);
        ASSERT_TRUE(fs::exists(fs::path(actual) / rel)) << rel;
        if (e.is_regular_file()) {
            EXPECT_EQ(slurp((fs::path(actual) / rel).string()), slurp(e.path().string())) << rel;
        }
    }
}

TEST_F(MountTest, WholeDiskExt4ShowsItsFilesReadOnlyAndUmountLeavesNothing) {
    make_tree(dir + "/tree", 1);
    std::string image = dir + "/fs.img";
    ASSERT_TRUE(run_checked({"truncate", "-s", "64M", image}));
    ASSERT_TRUE(run_checked({"mkfs.ext4", "-q", "-d", dir + "/tree", image}));
    std::string id = backup(image, "fs");
    ASSERT_FALSE(id.empty());

    std::string m = mount_dir("mnt");
    CliResult r = run({"mount", "fs@latest", m, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json out = json::parse(r.out);
    EXPECT_EQ(out["point"], id);
    ASSERT_EQ(out["filesystems"].size(), 1u) << r.out;
    EXPECT_EQ(out["filesystems"][0]["path"], fs::canonical(m).string());
    EXPECT_EQ(out["filesystems"][0]["type"], "ext4");
    expect_same_tree(dir + "/tree", m);
    // Read-only for everyone, and the repository is locked against gc meanwhile.
    int fd = ::open((m + "/new").c_str(), O_WRONLY | O_CREAT, 0644);
    EXPECT_LT(fd, 0);
    EXPECT_EQ(errno, EROFS);
    if (fd >= 0) ::close(fd);
    CliResult gc = run({"gc"});
    EXPECT_EQ(gc.exit_code, 7) << gc.err;
    // The same directory twice: a clear conflict.
    CliResult again = run({"mount", id.substr(0, 8), m});
    EXPECT_EQ(again.exit_code, 6);
    EXPECT_NE(again.err.find("already a vmshadow mount"), std::string::npos) << again.err;

    CliResult u = run({"umount", m});
    EXPECT_EQ(u.exit_code, 0) << u.err;
    expect_clean(m);
    EXPECT_EQ(run({"gc"}).exit_code, 0);
}

// A mount killed (kill -9) right after its server started: the server was recorded before it
// ran, so the repository lock names the umount that ends it, umount stops it, and gc works.
TEST_F(MountTest, MountKilledRightAfterItsServerStartedIsEndedByUmount) {
    make_tree(dir + "/tree", 3);
    std::string image = dir + "/fs.img";
    ASSERT_TRUE(run_checked({"truncate", "-s", "64M", image}));
    ASSERT_TRUE(run_checked({"mkfs.ext4", "-q", "-d", dir + "/tree", image}));
    ASSERT_FALSE(backup(image, "fs").empty());

    std::string m = mount_dir("mnt");
    env.push_back("VMSHADOW_TEST_KILL_AT=mount-server-started");
    CliResult killed = run({"mount", "fs@latest", m});
    env.pop_back();
    ASSERT_EQ(killed.exit_code, -1) << "vmshadow was not killed: " << killed.err;
    std::string state = vmshadow::exporter::mount_state_dir(m);
    json recorded = json::parse(slurp(state + "/state.json"));
    auto live = processes_mentioning(state);
    ASSERT_EQ(live.size(), 1u) << "one server, the recorded one";
    EXPECT_EQ(std::atol(live[0].c_str()), recorded["nbdkit"]["pid"].get<long>()) << live[0];
    CliResult gc = run({"gc"});
    EXPECT_EQ(gc.exit_code, 7) << gc.err;
    EXPECT_NE(gc.err.find("vmshadow umount " + fs::canonical(m).string()), std::string::npos)
        << gc.err;

    CliResult u = run({"umount", m});
    EXPECT_EQ(u.exit_code, 0) << u.err;
    expect_clean(m);
    EXPECT_EQ(run({"gc"}).exit_code, 0);
}

TEST_F(MountTest, PartitionedDiskMountsEachPartitionAndSkipsTheRest) {
    make_tree(dir + "/tree1", 2);
    make_tree(dir + "/tree2", 3);
    std::string image = dir + "/disk.img";
    ASSERT_TRUE(run_checked({"truncate", "-s", "100M", image}));
    std::string table = dir + "/table";
    // GPT: 1 MiB alignment; part1 40 MiB, part2 30 MiB, part3 the rest (no filesystem).
    spit(table,
         "label: gpt\nstart=2048, size=81920, type=L\nstart=83968, size=61440, type=L\n"
         "start=145408, type=L\n");
    auto sf = run_process({"sh", "-c", "sfdisk -q " + image + " < " + table});
    ASSERT_TRUE(sf && sf->exit_code == 0) << (sf ? sf->err : "");
    ASSERT_TRUE(run_checked({"truncate", "-s", "40M", dir + "/p1.img"}));
    ASSERT_TRUE(run_checked({"mkfs.ext4", "-q", "-d", dir + "/tree1", dir + "/p1.img"}));
    ASSERT_TRUE(run_checked({"truncate", "-s", "30M", dir + "/p2.img"}));
    ASSERT_TRUE(run_checked({"mkfs.ext4", "-q", "-d", dir + "/tree2", dir + "/p2.img"}));
    ASSERT_TRUE(run_checked({"dd", "if=" + dir + "/p1.img", "of=" + image, "bs=512", "seek=2048",
                             "conv=notrunc,sparse", "status=none"}));
    ASSERT_TRUE(run_checked({"dd", "if=" + dir + "/p2.img", "of=" + image, "bs=512", "seek=83968",
                             "conv=notrunc,sparse", "status=none"}));
    ASSERT_FALSE(backup(image, "parts").empty());

    std::string m = mount_dir("mnt");
    CliResult r = run({"mount", "parts@latest", m, "--disk", "disk0", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json out = json::parse(r.out);
    ASSERT_EQ(out["filesystems"].size(), 2u) << r.out;
    EXPECT_EQ(out["filesystems"][0]["name"], "part1");
    EXPECT_EQ(out["filesystems"][1]["name"], "part2");
    ASSERT_EQ(out["skipped"].size(), 1u) << r.out;
    EXPECT_EQ(out["skipped"][0]["name"], "part3");
    expect_same_tree(dir + "/tree1", m + "/part1");
    expect_same_tree(dir + "/tree2", m + "/part2");

    CliResult u = run({"umount", m});
    EXPECT_EQ(u.exit_code, 0) << u.err;
    expect_clean(m);
}

TEST_F(MountTest, LabGuestDiskShowsTheGuestsFiles) {
    auto lab = vmshadow::lab::lab_dir();
    ASSERT_TRUE(lab) << lab.error().message();
    std::string disk = (*lab / "root.qcow2").string();
    ASSERT_FALSE(backup(disk, "lab").empty());
    std::string m = mount_dir("mnt");
    CliResult r = run({"mount", "lab@latest", m});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("ext4"), std::string::npos) << r.out;
    for (std::string path : {"/etc/hostname", "/usr/lib/lab/workload", "/sbin/init"}) {
        auto expected = vmshadow::lab::read_file_from_image(disk, path);
        ASSERT_TRUE(expected) << expected.error().message();
        EXPECT_EQ(slurp(m + path), *expected) << path;
    }
    EXPECT_EQ(slurp(m + "/etc/hostname"), "lab-guest\n");
    CliResult u = run({"umount", m});
    EXPECT_EQ(u.exit_code, 0) << u.err;
    expect_clean(m);
}

TEST_F(MountTest, EncryptedRepositoryTakesThePasswordOnce) {
    // A repository of its own, encrypted; the password reaches nbdkit in its environment.
    repo = dir + "/crypt";
    env = {"VMSHADOW_REPO=" + repo, "VMSHADOW_PASSWORD=correct horse"};
    CliResult init = run({"repo", "init", repo, "--encrypt"});
    ASSERT_EQ(init.exit_code, 0) << init.err;
    make_tree(dir + "/tree", 4);
    std::string image = dir + "/fs.img";
    ASSERT_TRUE(run_checked({"truncate", "-s", "32M", image}));
    ASSERT_TRUE(run_checked({"mkfs.ext4", "-q", "-d", dir + "/tree", image}));
    ASSERT_FALSE(backup(image, "secret").empty());
    std::string m = mount_dir("mnt");

    env = {"VMSHADOW_REPO=" + repo, "VMSHADOW_PASSWORD=wrong"};
    CliResult wrong = run({"mount", "secret@latest", m});
    EXPECT_EQ(wrong.exit_code, 11) << wrong.err;
    expect_clean(m);

    env = {"VMSHADOW_REPO=" + repo, "VMSHADOW_PASSWORD=correct horse"};
    CliResult r = run({"mount", "secret@latest", m});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_tree(dir + "/tree", m);
    CliResult u = run({"umount", m});
    EXPECT_EQ(u.exit_code, 0) << u.err;
    expect_clean(m);
}

TEST_F(MountTest, BusyFilesystemStopsUmountUntilItIsFree) {
    make_tree(dir + "/tree", 6);
    std::string image = dir + "/fs.img";
    ASSERT_TRUE(run_checked({"truncate", "-s", "32M", image}));
    ASSERT_TRUE(run_checked({"mkfs.ext4", "-q", "-d", dir + "/tree", image}));
    ASSERT_FALSE(backup(image, "busy").empty());
    std::string m = mount_dir("mnt");
    CliResult r = run({"mount", "busy@latest", m});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    int fd = ::open((m + "/hello.txt").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    CliResult busy = run({"umount", m});
    EXPECT_EQ(busy.exit_code, 6) << busy.err;
    EXPECT_NE(busy.err.find("busy"), std::string::npos) << busy.err;
    char c = 0;
    EXPECT_EQ(::read(fd, &c, 1), 1);  // still served: nothing after the busy step was torn down
    EXPECT_EQ(c, 'h');
    ::close(fd);
    CliResult u = run({"umount", m});
    EXPECT_EQ(u.exit_code, 0) << u.err;
    expect_clean(m);
}

TEST_F(MountTest, ServerFailingAtStartIsReportedWithItsKindAndTornDown) {
    std::string image = dir + "/fs.img";
    ASSERT_TRUE(run_checked({"truncate", "-s", "16M", image}));
    ASSERT_TRUE(run_checked({"mkfs.ext4", "-q", image}));
    ASSERT_FALSE(backup(image, "locked").empty());
    // An exclusive lock held by a live process (this test), as gc would hold it.
    std::string stat = slurp("/proc/self/stat");
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string start;
    for (int i = 3; i <= 22 && fields >> start; ++i) {
    }
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    std::string lock = repo + "/locks/0123456789abcdef0123456789abcdef";
    spit(lock, json{{"pid", ::getpid()},
                    {"start_time", start},
                    {"host", host},
                    {"exclusive", true},
                    {"operation", "gc"},
                    {"time", "2026-01-01T00:00:00Z"}}
                   .dump());
    std::string m = mount_dir("mnt");
    CliResult r = run({"mount", "locked@latest", m});
    EXPECT_EQ(r.exit_code, 7) << r.err;
    EXPECT_NE(r.err.find("gc"), std::string::npos) << r.err;
    fs::remove(lock);
    expect_clean(m);
}

TEST_F(MountTest, BadInputGivesOneLineErrorsAndLeavesNothing) {
    std::string blob = dir + "/blob.img";
    spit(blob, random_bytes(2 * 1024 * 1024, 9));
    ASSERT_FALSE(backup(blob, "blob").empty());
    std::string m = mount_dir("mnt");

    CliResult unknown = run({"mount", "nosuch@latest", m});
    EXPECT_EQ(unknown.exit_code, 3) << unknown.err;
    CliResult missing = run({"mount", "blob@latest", dir + "/nonexistent"});
    EXPECT_EQ(missing.exit_code, 3) << missing.err;
    EXPECT_NE(missing.err.find("does not exist"), std::string::npos) << missing.err;
    CliResult file = run({"mount", "blob@latest", blob});
    EXPECT_EQ(file.exit_code, 2) << file.err;
    EXPECT_NE(file.err.find("not a directory"), std::string::npos) << file.err;
    spit(m + "/x", "x");
    CliResult full = run({"mount", "blob@latest", m});
    EXPECT_EQ(full.exit_code, 2) << full.err;
    EXPECT_NE(full.err.find("not empty"), std::string::npos) << full.err;
    fs::remove(m + "/x");
    // Random bytes: no filesystem, no partition table. Everything started is torn down.
    CliResult nofs = run({"mount", "blob@latest", m});
    EXPECT_EQ(nofs.exit_code, 3) << nofs.err;
    EXPECT_NE(nofs.err.find("no filesystem"), std::string::npos) << nofs.err;
    EXPECT_EQ(std::count(nofs.err.begin(), nofs.err.end(), '\n'), 1) << nofs.err;
    expect_clean(m);
    CliResult not_mounted = run({"umount", m});
    EXPECT_EQ(not_mounted.exit_code, 3) << not_mounted.err;
    EXPECT_NE(not_mounted.err.find("not a vmshadow mount"), std::string::npos);
}

TEST_F(MountTest, PluginServesThePointAndAnOverlayTakesWritesWithoutChangingTheRepository) {
    // A sparse image: data at the start, a hole, data at 40 MiB.
    std::string image = dir + "/disk.raw";
    ASSERT_TRUE(run_checked({"truncate", "-s", "64M", image}));
    spit(dir + "/a", random_bytes(1024 * 1024, 5));
    ASSERT_TRUE(
        run_checked({"dd", "if=" + dir + "/a", "of=" + image, "conv=notrunc", "status=none"}));
    ASSERT_TRUE(run_checked({"dd", "if=" + dir + "/a", "of=" + image, "bs=1M", "seek=40",
                             "conv=notrunc", "status=none"}));
    std::string id = backup(image, "raw");
    ASSERT_FALSE(id.empty());
    std::string original = slurp(image);

    // Read-only: size, holes, multi-conn, every byte.
    std::string sock = dir + "/ro.sock";
    pid_t ro = start_nbdkit(sock, {"repo=" + repo, "point=" + id.substr(0, 10)});
    ASSERT_GT(ro, 0);
    std::string uri = "nbd+unix:///?socket=" + sock;
    auto info = run_checked({"nbdinfo", "--json", uri});
    ASSERT_TRUE(info) << info.error().message();
    json exp = json::parse(*info)["exports"][0];
    EXPECT_EQ(exp["export-size"], 64u * 1024 * 1024);
    EXPECT_EQ(exp["is_read_only"], true);
    EXPECT_EQ(exp["can_multi_conn"], true);
    auto map = run_checked({"nbdinfo", "--map", "--json", uri});
    ASSERT_TRUE(map) << map.error().message();
    json extents = json::parse(*map);
    ASSERT_GE(extents.size(), 3u) << *map;
    EXPECT_EQ(extents[0]["offset"], 0);
    EXPECT_EQ(extents[0]["length"], 1024 * 1024);
    EXPECT_EQ(extents[0]["type"], 0);
    EXPECT_EQ(extents[1]["type"], 3);  // hole, zero
    ASSERT_TRUE(run_checked({"nbdcopy", uri, dir + "/copy.raw"}));
    EXPECT_TRUE(slurp(dir + "/copy.raw") == original);
    auto lock_files = std::distance(fs::directory_iterator(repo + "/locks"), {});
    EXPECT_EQ(lock_files, 1);
    stop_nbdkit(ro);
    EXPECT_TRUE(fs::is_empty(repo + "/locks"));

    // Overlay: writes (inside a chunk, across chunks, into the hole) read back.
    std::string overlay = dir + "/overlay";
    std::string wsock = dir + "/rw.sock";
    pid_t rw = start_nbdkit(
        wsock, {"repo=" + repo, "point=raw@latest", "disk=disk0", "overlay=" + overlay});
    ASSERT_GT(rw, 0);
    std::string wuri = "nbd+unix:///?socket=" + wsock;
    auto io = run_checked({"qemu-io", "-f", "raw", wuri, "-c", "write -P 0xab 1000 70000", "-c",
                           "write -P 0xcd 20M 4096", "-c", "flush"});
    ASSERT_TRUE(io) << io.error().message();
    std::string expected = original;
    std::fill(expected.begin() + 1000, expected.begin() + 71000, '\xab');
    std::fill(expected.begin() + 20 * 1024 * 1024, expected.begin() + 20 * 1024 * 1024 + 4096,
              '\xcd');
    ASSERT_TRUE(run_checked({"nbdcopy", wuri, dir + "/written.raw"}));
    EXPECT_TRUE(slurp(dir + "/written.raw") == expected);
    stop_nbdkit(rw);

    // The overlay outlives the server; the repository never saw the writes.
    std::string asock = dir + "/again.sock";
    pid_t again = start_nbdkit(asock, {"repo=" + repo, "point=" + id, "overlay=" + overlay});
    ASSERT_GT(again, 0);
    ASSERT_TRUE(run_checked({"nbdcopy", "nbd+unix:///?socket=" + asock, dir + "/again.raw"}));
    EXPECT_TRUE(slurp(dir + "/again.raw") == expected);
    stop_nbdkit(again);
    CliResult restore = run({"image", "restore", id, dir + "/restored.raw"});
    ASSERT_EQ(restore.exit_code, 0) << restore.err;
    EXPECT_TRUE(slurp(dir + "/restored.raw") == original);
    CliResult check = run({"repo", "check", "--read-data"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

    // A wrong point fails at start with the plugin's message.
    auto bad = run_process({"nbdkit", "--log=stderr", "-U", dir + "/bad.sock", plugin_path(),
                            "repo=" + repo, "point=ffffffffff"});
    ASSERT_TRUE(bad);
    EXPECT_NE(bad->exit_code, 0);
    EXPECT_NE(bad->err.find("[not_found]"), std::string::npos) << bad->err;
}

}  // namespace
