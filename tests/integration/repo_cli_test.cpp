// SPDX-License-Identifier: MIT
// The repository commands end to end: the real vmshadow binary, real qemu-nbd and qemu-img,
// raw and qcow2 images, restores compared byte for byte, a SIGKILL in the middle of a backup.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct CliRun {
    int exit_code = -1;
    std::string out, err;
};

// Runs vmshadow with extra environment, stdin from /dev/null and, when `no_tty`, in a new
// session (no controlling terminal).
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env,
            const std::string& out, const std::string& err, bool no_tty) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    if (no_tty) setsid();
    int in = open("/dev/null", O_RDONLY);
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
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

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class RepoCli : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/vmshadow-repo-cli-XXXXXX";
        dir = mkdtemp(tmpl);
        repo = dir + "/repo";
        env = {"VMSHADOW_REPO=" + repo, "VMSHADOW_PASSWORD="};
    }
    void TearDown() override { fs::remove_all(dir); }

    CliRun run(const std::vector<std::string>& args, std::vector<std::string> extra_env = {}) {
        std::vector<std::string> e = env;
        e.insert(e.end(), extra_env.begin(), extra_env.end());
        pid_t pid = spawn(args, e, dir + "/out", dir + "/err", true);
        int status = 0;
        waitpid(pid, &status, 0);
        CliRun r;
        r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        r.out = slurp(dir + "/out");
        r.err = slurp(dir + "/err");
        return r;
    }

    // A raw image of `mib` MiB: scattered real file content (compressible), random blocks,
    // zero gaps.
    std::string make_raw(const std::string& name, int mib, unsigned seed) {
        std::string path = dir + "/" + name;
        std::ofstream(path).close();
        fs::resize_file(path, std::uint64_t(mib) << 20);
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        std::string bash = slurp("/usr/bin/bash");
        std::mt19937 gen(seed);
        for (int i = 0; i < mib / 4; ++i) {
            f.seekp(static_cast<std::streamoff>((std::uint64_t(i) * 4 + gen() % 3) << 20));
            if (i % 3 == 0) {
                std::string noise(300 * 1024, 0);
                for (auto& c : noise) c = static_cast<char>(gen());
                f.write(noise.data(), static_cast<std::streamsize>(noise.size()));
            } else {
                f.write(bash.data(), std::min<std::streamsize>(bash.size(), 700 * 1024));
            }
        }
        return path;
    }

    std::string dir, repo;
    std::vector<std::string> env;
};

bool same_file(const std::string& a, const std::string& b) {
    return std::system(("cmp -s '" + a + "' '" + b + "'").c_str()) == 0;
}

TEST_F(RepoCli, RawAndQcow2RoundTripsAreBitExact) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 48, 1);
    std::string qcow = dir + "/disk.qcow2";
    ASSERT_EQ(std::system(("qemu-img convert -O qcow2 " + raw + " " + qcow).c_str()), 0);
    CliRun b = run({"image", "backup", raw, qcow, "--name", "img", "--json"});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    json point = json::parse(b.out);
    ASSERT_EQ(point["disks"].size(), 2u);

    CliRun r1 = run({"image", "restore", "img@latest", dir + "/out.raw", "--disk", "disk0"});
    ASSERT_EQ(r1.exit_code, 0) << r1.err;
    EXPECT_TRUE(same_file(raw, dir + "/out.raw"));
    CliRun r2 = run({"image", "restore", point["id"].get<std::string>().substr(0, 8),
                     dir + "/out.qcow2", "--disk", "disk1", "--format", "qcow2"});
    ASSERT_EQ(r2.exit_code, 0) << r2.err;
    EXPECT_EQ(std::system(("qemu-img compare -q " + qcow + " " + dir + "/out.qcow2").c_str()), 0);
    EXPECT_EQ(
        std::system(("qemu-img info " + dir + "/out.qcow2 | grep -q 'file format: qcow2'").c_str()),
        0);
    // The restored raw file is sparse: holes were not written.
    struct stat st {};
    ASSERT_EQ(stat((dir + "/out.raw").c_str(), &st), 0);
    EXPECT_LT(std::uint64_t(st.st_blocks) * 512, std::uint64_t(st.st_size) / 2);
    CliRun need_disk = run({"image", "restore", "img@latest", dir + "/x.raw"});
    EXPECT_EQ(need_disk.exit_code, 2) << need_disk.err;
    EXPECT_NE(need_disk.err.find("--disk"), std::string::npos);
}

TEST_F(RepoCli, IncrementalOfAnUnchangedImageAddsAlmostNothingAndPointsListsIt) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 32, 2);
    ASSERT_EQ(run({"image", "backup", raw, "--name", "web"}).exit_code, 0);
    // Change a few scattered 4 KiB blocks.
    {
        std::fstream f(raw, std::ios::in | std::ios::out | std::ios::binary);
        for (std::uint64_t off : {1ull << 20, 9ull << 20, 21ull << 20}) {
            f.seekp(static_cast<std::streamoff>(off));
            f.write("changed!changed!", 16);
        }
    }
    CliRun inc = run({"image", "backup", raw, "--name", "web", "--json"});
    ASSERT_EQ(inc.exit_code, 0) << inc.err;
    json j = json::parse(inc.out);
    EXPECT_LE(j["disks"][0]["chunks_new"].get<int>(), 3);
    EXPECT_LT(j["bytes_added"].get<std::uint64_t>(), 3u * 65536 + 64 * 1024);
    CliRun same = run({"image", "backup", raw, "--name", "web", "--json"});
    ASSERT_EQ(same.exit_code, 0);
    EXPECT_EQ(json::parse(same.out)["bytes_added"].get<std::uint64_t>(), 0u);

    CliRun points = run({"points", "web", "--json"});
    ASSERT_EQ(points.exit_code, 0) << points.err;
    json list = json::parse(points.out);
    ASSERT_EQ(list.size(), 3u);
    for (const char* key :
         {"id", "vm", "time", "consistency", "bytes_added", "disks", "annotations"})
        EXPECT_TRUE(list[0].contains(key)) << key;
    EXPECT_EQ(list[0]["vm"], "web");
    EXPECT_TRUE(list[0]["time"].get<std::string>().ends_with("Z"));
    EXPECT_LE(list[0]["time"].get<std::string>(), list[2]["time"].get<std::string>());

    ASSERT_EQ(
        run({"annotate", "web@latest", "boot_verification", "--data", R"({"ok":true})"}).exit_code,
        0);
    json again = json::parse(run({"points", "--json"}).out);
    EXPECT_EQ(again[2]["annotations"][0]["kind"], "boot_verification");

    CliRun r = run({"image", "restore", list[1]["id"].get<std::string>(), dir + "/out.raw"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(same_file(raw, dir + "/out.raw"));

    ASSERT_EQ(run({"forget", list[0]["id"].get<std::string>()}).exit_code, 0);
    CliRun dry = run({"prune", "--keep-last", "1", "--dry-run", "--json"});
    ASSERT_EQ(dry.exit_code, 0) << dry.err;
    EXPECT_EQ(json::parse(dry.out)["points"].size(), 2u);
    ASSERT_EQ(run({"prune", "--keep-last", "1"}).exit_code, 0);
    EXPECT_EQ(json::parse(run({"points", "--json"}).out).size(), 1u);
    CliRun check = run({"repo", "check", "--read-data"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(RepoCli, CheckAndRestoreNameDamageAndExitWithCorruption) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 16, 3);
    ASSERT_EQ(run({"image", "backup", raw, "--name", "vm"}).exit_code, 0);
    std::string pack;
    for (auto& e : fs::recursive_directory_iterator(repo + "/data"))
        if (e.is_regular_file()) pack = e.path();
    {
        std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(4096);
        f.write("XXXX", 4);
    }
    CliRun check = run({"repo", "check", "--read-data"});
    EXPECT_EQ(check.exit_code, 8);
    EXPECT_NE(check.out.find("damaged restore point"), std::string::npos) << check.out;
    CliRun restore = run({"image", "restore", "vm@latest", dir + "/out.raw"});
    EXPECT_EQ(restore.exit_code, 8) << restore.err;
    EXPECT_NE(restore.err.find(fs::path(pack).filename().string()), std::string::npos)
        << restore.err;
    EXPECT_FALSE(fs::exists(dir + "/out.raw")) << "no partial output may look complete";
}

TEST_F(RepoCli, PasswordsAndErrorsAreClear) {
    CliRun missing = run({"points"});
    EXPECT_EQ(missing.exit_code, 3);
    EXPECT_NE(missing.err.find("repo init"), std::string::npos) << missing.err;

    CliRun init = run({"repo", "init", repo, "--encrypt"}, {"VMSHADOW_PASSWORD=first"});
    ASSERT_EQ(init.exit_code, 0) << init.err;
    // No terminal, no password: fails at once and says how to give one.
    CliRun prompt = run({"points"});
    EXPECT_EQ(prompt.exit_code, 11);
    EXPECT_NE(prompt.err.find("VMSHADOW_PASSWORD"), std::string::npos) << prompt.err;
    EXPECT_NE(prompt.err.find("--password-file"), std::string::npos) << prompt.err;
    EXPECT_EQ(run({"points"}, {"VMSHADOW_PASSWORD=wrong"}).exit_code, 11);

    std::string raw = make_raw("disk.raw", 8, 4);
    ASSERT_EQ(run({"image", "backup", raw, "--name", "s"}, {"VMSHADOW_PASSWORD=first"}).exit_code,
              0);
    CliRun add =
        run({"repo", "key", "add"}, {"VMSHADOW_PASSWORD=first", "VMSHADOW_NEW_PASSWORD=second"});
    ASSERT_EQ(add.exit_code, 0) << add.err;
    std::ofstream(dir + "/pw") << "second\n";
    CliRun with_file = run({"--password-file", dir + "/pw", "points", "--json"});
    ASSERT_EQ(with_file.exit_code, 0) << with_file.err;
    EXPECT_EQ(json::parse(with_file.out).size(), 1u);
    CliRun passwd =
        run({"repo", "key", "passwd"}, {"VMSHADOW_PASSWORD=first", "VMSHADOW_NEW_PASSWORD=third"});
    ASSERT_EQ(passwd.exit_code, 0) << passwd.err;
    EXPECT_EQ(run({"points"}, {"VMSHADOW_PASSWORD=first"}).exit_code, 11);
    CliRun r = run({"image", "restore", "s@latest", dir + "/out.raw"}, {"VMSHADOW_PASSWORD=third"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(same_file(raw, dir + "/out.raw"));
}

TEST_F(RepoCli, TwoBackupsRunAtTheSameTimeAndBothSucceed) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string a = make_raw("a.raw", 64, 5), b = make_raw("b.raw", 64, 6);
    std::vector<std::string> e = env;
    pid_t pa = spawn({"image", "backup", a, "--name", "a"}, e, dir + "/oa", dir + "/ea", true);
    pid_t pb = spawn({"image", "backup", b, "--name", "b"}, e, dir + "/ob", dir + "/eb", true);
    int sa = 0, sb = 0;
    waitpid(pa, &sa, 0);
    waitpid(pb, &sb, 0);
    EXPECT_EQ(WEXITSTATUS(sa), 0) << slurp(dir + "/ea");
    EXPECT_EQ(WEXITSTATUS(sb), 0) << slurp(dir + "/eb");
    for (const char* name : {"a", "b"}) {
        CliRun r =
            run({"image", "restore", std::string(name) + "@latest", dir + "/" + name + ".out"});
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_TRUE(same_file(dir + "/" + name + ".raw", dir + "/" + name + ".out"));
    }
}

TEST_F(RepoCli, SigkillMidBackupKeepsEarlierPointsAndTheNextRunCleansUp) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string first = make_raw("first.raw", 16, 7);
    ASSERT_EQ(run({"image", "backup", first, "--name", "vm"}).exit_code, 0);
    // A big, incompressible image, so the backup is surely mid-way when killed.
    std::string big = dir + "/big.raw";
    ASSERT_EQ(std::system(("head -c 400M /dev/urandom > " + big).c_str()), 0);
    pid_t pid = spawn({"image", "backup", big, "--name", "vm", "--workers", "1"}, env, dir + "/ok",
                      dir + "/ek", true);
    // Kill once the backup has committed a pack to data/ (its work is under way).
    auto packs = [&] {
        int n = 0;
        for (auto& e : fs::recursive_directory_iterator(repo + "/data")) n += e.is_regular_file();
        return n;
    };
    int before = packs();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (packs() < before + 2 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the backup finished before it could be killed";
    // Its qemu-nbd server dies with it (PR_SET_PDEATHSIG): nothing to clean up here.

    EXPECT_FALSE(fs::is_empty(repo + "/locks")) << "the killed run's lock is left behind";
    json list = json::parse(run({"points", "--json"}).out);
    ASSERT_EQ(list.size(), 1u);
    CliRun r = run({"image", "restore", "vm@latest", dir + "/first.out"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(same_file(first, dir + "/first.out"));

    CliRun next = run({"image", "backup", first, "--name", "vm"});
    ASSERT_EQ(next.exit_code, 0) << next.err;
    EXPECT_TRUE(fs::is_empty(repo + "/tmp"));
    EXPECT_TRUE(fs::is_empty(repo + "/locks"));
    CliRun check = run({"repo", "check", "--read-data", "--json"});
    EXPECT_EQ(check.exit_code, 0) << check.out;
    EXPECT_TRUE(json::parse(check.out)["warnings"].empty()) << check.out;
}

TEST_F(RepoCli, RepairIndexAfterLosingEveryIndexFileRestoresBitExact) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 24, 8);
    ASSERT_EQ(run({"image", "backup", raw, "--name", "vm"}).exit_code, 0);
    for (auto& e : fs::directory_iterator(repo + "/index")) fs::remove(e.path());

    CliRun check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 8);
    EXPECT_NE(check.out.find("vmshadow repo repair index"), std::string::npos) << check.out;
    // With --json the report is the one JSON object printed, its "ok" false.
    CliRun as_json = run({"repo", "check", "--json"});
    EXPECT_EQ(as_json.exit_code, 8);
    auto checked = json::parse(as_json.out);  // throws (fails the test) on a second object
    EXPECT_FALSE(checked["ok"].get<bool>()) << as_json.out;
    EXPECT_EQ(checked["kind"], "corruption") << as_json.out;

    CliRun repair = run({"repo", "repair", "index", "--read-data", "--json"});
    ASSERT_EQ(repair.exit_code, 0) << repair.out << repair.err;
    json report = json::parse(repair.out);
    EXPECT_TRUE(report["ok"].get<bool>());
    EXPECT_GT(report["packs_indexed"].get<int>(), 0);
    EXPECT_TRUE(report["packs_skipped"].empty());
    CliRun r = run({"image", "restore", "vm@latest", dir + "/out.raw"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(same_file(raw, dir + "/out.raw"));
    CliRun clean = run({"repo", "check", "--read-data", "--json"});
    EXPECT_EQ(clean.exit_code, 0) << clean.out;
    EXPECT_TRUE(json::parse(clean.out)["warnings"].empty()) << clean.out;
}

TEST_F(RepoCli, RepairIndexReportsADamagedPackAndExitsWithCorruption) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 16, 9);
    ASSERT_EQ(run({"image", "backup", raw, "--name", "vm"}).exit_code, 0);
    std::string pack;
    for (auto& e : fs::recursive_directory_iterator(repo + "/data"))
        if (e.is_regular_file()) pack = e.path();
    {
        std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(fs::file_size(pack) - 12));  // in the trailer
        f.write("XXXX", 4);
    }
    CliRun repair = run({"repo", "repair", "index"});
    EXPECT_EQ(repair.exit_code, 8) << repair.out << repair.err;
    EXPECT_NE(repair.out.find("skipped pack " + pack), std::string::npos) << repair.out;
    EXPECT_TRUE(fs::exists(pack)) << "repair never deletes a pack";
    // check names the pack repair left out, and no longer sends the user to repair again.
    CliRun check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 8) << check.out << check.err;
    EXPECT_NE(check.out.find("pack " + pack + " is in no index and is damaged"), std::string::npos)
        << check.out;
    EXPECT_NE(check.out.find("leaves it out"), std::string::npos) << check.out;
    EXPECT_EQ(check.out.find("probably missing"), std::string::npos) << check.out;
    EXPECT_EQ(check.out.find("run `vmshadow repo repair index`"), std::string::npos) << check.out;
}

TEST_F(RepoCli, UnlockRemoveAllAfterAnotherHostsLockLetsABackupProceed) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 8, 10);
    std::ofstream(repo + "/locks/0123456789abcdef0123456789abcdef")
        << json{{"pid", 4242},       {"start_time", "1"}, {"host", "other-host.example"},
                {"exclusive", true}, {"operation", "gc"}, {"time", "2026-11-22T01:00:00Z"}}
               .dump();
    CliRun locked = run({"image", "backup", raw, "--name", "vm"});
    EXPECT_EQ(locked.exit_code, 7) << locked.err;
    EXPECT_NE(locked.err.find("vmshadow repo unlock --remove-all"), std::string::npos)
        << locked.err;

    CliRun unlock = run({"repo", "unlock"});
    EXPECT_EQ(unlock.exit_code, 0) << unlock.err;
    EXPECT_NE(unlock.out.find("kept"), std::string::npos) << unlock.out;
    EXPECT_FALSE(fs::is_empty(repo + "/locks")) << "another host's lock stays without --remove-all";

    CliRun all = run({"repo", "unlock", "--remove-all"});
    EXPECT_EQ(all.exit_code, 0) << all.err;
    for (const char* part : {"warning:", "other-host.example", "4242", "`gc`", "old"})
        EXPECT_NE(all.err.find(part), std::string::npos) << part << " in: " << all.err;
    EXPECT_TRUE(fs::is_empty(repo + "/locks"));

    CliRun backup = run({"image", "backup", raw, "--name", "vm"});
    ASSERT_EQ(backup.exit_code, 0) << backup.err;
    CliRun r = run({"image", "restore", "vm@latest", dir + "/out.raw"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(same_file(raw, dir + "/out.raw"));
}

std::set<std::string> files_under(const std::string& path) {
    std::set<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(path))
        if (e.is_regular_file()) out.insert(e.path().string());
    return out;
}

TEST_F(RepoCli, DeletedCommitRecordIsReportedByCheckKeptByGcAndFreedByGcGraceZero) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string a = make_raw("a.raw", 8, 21), b = make_raw("b.raw", 8, 22);
    ASSERT_EQ(run({"image", "backup", a, "--name", "a"}).exit_code, 0);
    std::set<std::string> record_a = files_under(repo + "/commits");
    ASSERT_EQ(record_a.size(), 1u);
    ASSERT_EQ(run({"image", "backup", b, "--name", "b"}).exit_code, 0);
    fs::remove(*record_a.begin());  // a crash, a stray rm: the point is gone from `points`
    std::set<std::string> data = files_under(repo + "/data");

    for (const char* read_data : {"", "--read-data"}) {
        std::vector<std::string> args{"repo", "check"};
        if (*read_data) args.push_back(read_data);
        CliRun check = run(args);
        EXPECT_EQ(check.exit_code, 0) << "unreferenced data is a warning: " << check.err;
        EXPECT_NE(check.out.find("warning: "), std::string::npos) << check.out;
        EXPECT_NE(check.out.find("referenced by no restore point"), std::string::npos) << check.out;
        EXPECT_NE(check.out.find("commit record was lost or deleted"), std::string::npos)
            << check.out;
        EXPECT_NE(check.out.find("(1 warning(s) above)"), std::string::npos) << check.out;
    }
    json report = json::parse(run({"repo", "check", "--json"}).out);
    EXPECT_GT(report["unreferenced"]["blobs"].get<int>(), 0) << report.dump();
    EXPECT_EQ(report["unreferenced"]["packs_within_grace"], report["unreferenced"]["packs"]);

    CliRun gc = run({"gc"});
    ASSERT_EQ(gc.exit_code, 0) << gc.err;
    EXPECT_NE(gc.out.find("grace period"), std::string::npos) << gc.out;
    EXPECT_EQ(files_under(repo + "/data"), data) << "gc keeps data younger than the grace period";

    for (const char* bad : {"-1", "87841", "1e308", "abc", "nan"}) {
        CliRun refused = run({"gc", "--grace", bad});
        EXPECT_EQ(refused.exit_code, 2) << bad << ": " << refused.err;
    }
    EXPECT_EQ(files_under(repo + "/data"), data);

    CliRun now = run({"gc", "--grace", "0", "--json"});
    ASSERT_EQ(now.exit_code, 0) << now.err;
    json freed = json::parse(now.out);  // a's pack shares chunks with b's: rewritten
    EXPECT_GT(freed["packs_removed"].get<int>() + freed["packs_rewritten"].get<int>(), 0)
        << now.out;
    EXPECT_GT(freed["blobs_dead"].get<int>(), 0) << now.out;
    EXPECT_NE(files_under(repo + "/data"), data);
    CliRun clean = run({"repo", "check", "--read-data"});
    EXPECT_EQ(clean.exit_code, 0) << clean.out;
    EXPECT_EQ(clean.out.find("warning"), std::string::npos) << clean.out;
    CliRun r = run({"image", "restore", "b@latest", dir + "/out.raw"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(same_file(b, dir + "/out.raw"));
}

TEST_F(RepoCli, UnreadableLockBlocksGcAndPruneUntilUnlockRemoveAllRemovesIt) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 8, 23);
    ASSERT_EQ(run({"image", "backup", raw, "--name", "vm"}).exit_code, 0);
    std::string lock = repo + "/locks/0123456789abcdef0123456789abcdef";
    for (const std::string& content :
         {std::string("garbage"), std::string(), std::string(R"({"pid": 42, "host)"),
          json{{"version", 9},
               {"pid", 1},
               {"host", "h"},
               {"exclusive", false},
               {"operation", "gc"},
               {"time", "2026-11-22T01:00:00Z"}}
              .dump()}) {
        SCOPED_TRACE(content);
        std::ofstream(lock) << content;
        for (std::vector<std::string> args : {std::vector<std::string>{"gc"},
                                              {"gc", "--grace", "0"},
                                              {"prune", "--keep-last", "1"},
                                              {"repo", "repair", "index"},
                                              {"repo", "repair", "records"},
                                              {"forget", "vm@latest"}}) {
            CliRun r = run(args);
            EXPECT_EQ(r.exit_code, 7) << args[0] << ": " << r.err;
            EXPECT_NE(r.err.find(lock), std::string::npos) << r.err;
            EXPECT_NE(r.err.find("vmshadow repo unlock --remove-all"), std::string::npos) << r.err;
        }
        CliRun keep = run({"repo", "unlock"});
        EXPECT_EQ(keep.exit_code, 0) << keep.err;
        EXPECT_NE(keep.out.find("kept unreadable lock file"), std::string::npos) << keep.out;
        EXPECT_NE(keep.out.find("--remove-all"), std::string::npos) << keep.out;
        EXPECT_TRUE(fs::exists(lock));
        CliRun all = run({"repo", "unlock", "--remove-all"});
        EXPECT_EQ(all.exit_code, 0) << all.err;
        EXPECT_FALSE(fs::exists(lock));
        CliRun gc = run({"gc"});
        EXPECT_EQ(gc.exit_code, 0) << gc.err;
    }
    EXPECT_EQ(json::parse(run({"points", "--json"}).out).size(), 1u) << "nothing was forgotten";
}

TEST_F(RepoCli, DamagedCommitRecordBlocksGcUntilRepairRecordsQuarantinesIt) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string a = make_raw("a.raw", 8, 24), b = make_raw("b.raw", 8, 25);
    ASSERT_EQ(run({"image", "backup", a, "--name", "a"}).exit_code, 0);
    std::string record = *files_under(repo + "/commits").begin();
    ASSERT_EQ(run({"image", "backup", b, "--name", "b"}).exit_code, 0);
    std::ofstream(record, std::ios::trunc) << "damaged";

    CliRun check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 8);
    EXPECT_NE(check.out.find(record), std::string::npos) << check.out;
    EXPECT_NE(check.out.find("vmshadow repo repair records"), std::string::npos) << check.out;
    CliRun gc = run({"gc"});
    EXPECT_EQ(gc.exit_code, 8) << gc.err;
    EXPECT_NE(gc.err.find("vmshadow repo repair records"), std::string::npos) << gc.err;

    CliRun repair = run({"repo", "repair", "records"});
    ASSERT_EQ(repair.exit_code, 0) << repair.err;
    EXPECT_NE(repair.out.find("quarantined " + record), std::string::npos) << repair.out;
    EXPECT_FALSE(fs::exists(record));
    EXPECT_EQ(files_under(repo + "/quarantine").size(), 1u);
    EXPECT_EQ(run({"gc"}).exit_code, 0);
    EXPECT_EQ(run({"repo", "check"}).exit_code, 0);
    CliRun r = run({"image", "restore", "b@latest", dir + "/out.raw"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(same_file(b, dir + "/out.raw"));
}

TEST_F(RepoCli, HugeWorkerCountIsRefusedAndLeavesNoPartialFile) {
    ASSERT_EQ(run({"repo", "init", repo}).exit_code, 0);
    std::string raw = make_raw("disk.raw", 8, 26);
    CliRun backup = run({"image", "backup", raw, "--name", "vm", "--workers", "100000"});
    EXPECT_EQ(backup.exit_code, 2) << backup.err;
    EXPECT_TRUE(files_under(repo + "/commits").empty());
    ASSERT_EQ(run({"image", "backup", raw, "--name", "vm"}).exit_code, 0);
    for (const char* format : {"raw", "qcow2"}) {
        std::string out = dir + "/out." + format;
        CliRun r =
            run({"image", "restore", "vm@latest", out, "--format", format, "--workers", "100000"});
        EXPECT_EQ(r.exit_code, 2) << r.err;
        EXPECT_FALSE(fs::exists(out));
        EXPECT_FALSE(fs::exists(out + ".vmshadow-partial"));
    }
}

}  // namespace
