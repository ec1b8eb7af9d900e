// SPDX-License-Identifier: MIT
// Every long operation is a task: `--progress=json` reports its phases and bytes, and the
// first SIGINT cancels it cleanly (exit 12) — the guest thawed and running, no libvirt job,
// no scratch, no new checkpoint, nothing referenced in the repository, the lock free, the
// next backup incremental from the last good point; a cancelled restore leaves no file.
// Each phase in turn: the copy, the freeze (the guest's hook made slow), the commit (before
// and after BackupComplete), gc's mark, a VM restore's write and the moment before its swap
// (the old VM exactly as it was), an instant recovery's copy (resumed by the same command).
// The phases without a slow step of their own are held by the test hook
// VMSHADOW_TEST_PAUSE_AT (common/test_hook.h) so that the SIGINT lands inside them.
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

// The JSON progress lines of a stderr text (other lines are skipped).
std::vector<json> progress_lines(const std::string& text) {
    std::vector<json> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        auto j = json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.is_object() && j.contains("phase")) lines.push_back(j);
    }
    return lines;
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// Waits for `pid` to exit; its exit code (128 + signal when killed), -1 after `limit`.
int wait_exit(pid_t pid, std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(50ms)) {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return -1;
}

// Kills a child left running by a failed assertion.
struct ChildGuard {
    pid_t pid = -1;
    ~ChildGuard() {
        if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
            ::kill(-pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
};

// Polls `output` until a progress line of `phase` with some bytes done shows up.
bool wait_for_phase(const fs::path& output, pid_t pid, const std::string& phase,
                    std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(20ms)) {
        for (const auto& j : progress_lines(read_text(output)))
            if (j["phase"] == phase && j["bytes_done"].get<std::uint64_t>() > 0 &&
                j["bytes_done"] < j["bytes_total"])
                return true;
        if (::waitpid(pid, nullptr, WNOHANG) == pid) return false;
    }
    return false;
}

// Polls `output` until it holds `text`; false if `pid` exited first or after `limit`.
bool wait_for_text(const fs::path& output, pid_t pid, const std::string& text,
                   std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(20ms)) {
        if (read_text(output).find(text) != std::string::npos) return true;
        if (::waitpid(pid, nullptr, WNOHANG) == pid) return false;
    }
    return false;
}

// Sets environment variables for the children started while it lives.
struct ScopedEnv {
    std::vector<std::string> names;
    ScopedEnv(std::initializer_list<std::pair<std::string, std::string>> vars) {
        for (const auto& [name, value] : vars) {
            ::setenv(name.c_str(), value.c_str(), 1);
            names.push_back(name);
        }
    }
    ~ScopedEnv() {
        for (const auto& n : names) ::unsetenv(n.c_str());
    }
};

// What an interrupted command did: its exit code, output, and how long it took to end.
struct Interrupted {
    int code = -1;
    std::string text;
    std::chrono::milliseconds took{0};
};

class CancelTest : public VmBackupTest {
  protected:
    // Starts `vmshadow ARGS` held at the test hook step `pause_at` (none: ""), waits until
    // `ready` appears in its output (default: the hook's line), sends SIGINT, and waits for it.
    Interrupted interrupt(const std::vector<std::string>& args, const std::string& pause_at,
                          std::string ready = {}, std::chrono::milliseconds settle = 0ms) {
        static int n = 0;
        fs::path output = dir / ("interrupted-" + std::to_string(++n) + ".out");
        if (ready.empty()) ready = "vmshadow-test: paused at " + pause_at;
        ChildGuard child;
        {
            ScopedEnv env{{"VMSHADOW_TEST_PAUSE_AT", pause_at}, {"VMSHADOW_TEST_PAUSE_MS", "2000"}};
            child.pid = start_vmshadow_in_own_group(args, output.string());
        }
        Interrupted r;
        if (child.pid <= 0) return r;
        if (!wait_for_text(output, child.pid, ready, 300s)) {
            r.text = "never saw '" + ready + "': " + read_text(output);
            return r;
        }
        std::this_thread::sleep_for(settle);
        auto at = std::chrono::steady_clock::now();
        ::kill(child.pid, SIGINT);
        r.code = wait_exit(child.pid, 120s);
        if (r.code >= 0) child.pid = -1;
        r.took = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - at);
        r.text = read_text(output);
        std::cerr << "cancel at " << (pause_at.empty() ? ready : pause_at) << " took "
                  << r.took.count() << " ms\n";
        return r;
    }

    std::vector<std::string> backup_args(std::vector<std::string> extra) const {
        std::vector<std::string> args{"backup",        "--progress=json",
                                      "--writers-dir", writers_dir.string(),
                                      "--state-file",  state_file.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        return args_with_repo(args);
    }

    // What a cancelled backup must leave: no job, the guest running and thawed, no scratch,
    // only the last good checkpoint, `points` points, the lock free, `repo check` clean.
    void expect_nothing_kept(lab::LabGuest& g, const std::string& good_checkpoint,
                             std::size_t points) {
        expect_no_job_and_running(g);
        EXPECT_EQ(freeze_status(g), "thawed");
        EXPECT_TRUE(scratch_leftovers().empty()) << ::testing::PrintToString(scratch_leftovers());
        EXPECT_EQ(checkpoints(g), std::vector<std::string>{good_checkpoint});
        EXPECT_TRUE(lock_files().empty()) << ::testing::PrintToString(lock_files());
        auto listed = run({"points", g.name(), "--json"});
        ASSERT_EQ(listed.exit_code, 0) << listed.err;
        EXPECT_EQ(json::parse(listed.out).size(), points) << listed.out;
        auto check = run({"repo", "check"});
        EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    }

    // The next backup succeeds, incremental from `good_checkpoint`; returns its checkpoint.
    std::string expect_next_incremental(lab::LabGuest& g, const std::string& good_checkpoint) {
        json next = backup_ok({g.name()});
        EXPECT_EQ(mode_of(next, "vda"), "incremental") << next.dump(2);
        EXPECT_EQ(next["incremental_from"], good_checkpoint) << next.dump(2);
        return next.value("checkpoint", "");
    }

    // A guest whose blank 1 GiB vdb is filled with random data before it boots: a copy that
    // takes long enough to be interrupted midway.
    lab::LabGuest& boot_with_full_disk() {
        lab::GuestOptions options;
        options.data_disks = {{lab::DataDisk::Kind::blank, "1G"}};
        auto guest = lab::LabGuest::create(options, current_test_name());
        if (!guest) throw std::runtime_error("create: " + guest.error().message());
        guests.push_back(std::move(*guest));
        lab::LabGuest& g = guests.back();
        fs::path raw = dir / "random.raw";
        auto fill = lab::run_process({"sh", "-c", "head -c 1G /dev/urandom > " + raw.string()});
        if (!fill || fill->exit_code != 0) throw std::runtime_error("fill the data disk");
        auto convert = lab::run_checked({"qemu-img", "convert", "-f", "raw", "-O", "qcow2",
                                         raw.string(), g.disk_path("vdb").string()});
        if (!convert) throw std::runtime_error(convert.error().message());
        fs::remove(raw);
        if (auto s = g.start(); !s) throw std::runtime_error(s.error().message());
        if (auto s = g.wait_for_agent(); !s) throw std::runtime_error(s.error().message());
        return g;
    }

    std::vector<std::string> args_with_repo(std::vector<std::string> args) const {
        std::vector<std::string> full{"--repo", repo.string(), "--scratch-dir", scratch.string()};
        full.insert(full.end(), args.begin(), args.end());
        return full;
    }

    void expect_no_job_and_running(const lab::LabGuest& g) {
        auto job = lab::run_checked({"virsh", "-c", lab::lab_uri(), "domjobinfo", g.name()});
        ASSERT_TRUE(job) << job.error().message();
        EXPECT_NE(job->find("None"), std::string::npos) << *job;
        auto state = lab::run_checked({"virsh", "-c", lab::lab_uri(), "domstate", g.name()});
        ASSERT_TRUE(state);
        EXPECT_NE(state->find("running"), std::string::npos) << *state;
    }

    std::vector<std::string> lock_files() const {
        std::vector<std::string> out;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(repo / "locks", ec))
            out.push_back(e.path().string());
        return out;
    }
};

TEST_F(CancelTest, InterruptedBackupKeepsNothingAndTheNextOneIsIncremental) {
    lab::LabGuest& g = boot_with_full_disk();

    // A full backup with JSON progress: phases in order, bytes never going back, and the copy
    // of each disk ending at the size the result reports.
    auto first = backup({g.name(), "--progress=json"});
    ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
    json vm = json::parse(first.out)["vms"][0];
    const std::string good_point = vm["point"], good_checkpoint = vm["checkpoint"];
    auto lines = progress_lines(first.err);
    ASSERT_FALSE(lines.empty()) << first.err;
    std::vector<std::string> phases;
    for (const auto& l : lines)
        if (phases.empty() || phases.back() != l["phase"]) phases.push_back(l["phase"]);
    EXPECT_EQ(phases.front(), "prepare");
    EXPECT_EQ(phases.back(), "commit");
    EXPECT_NE(std::find(phases.begin(), phases.end(), "copy"), phases.end());
    std::map<std::string, std::uint64_t> last_bytes;  // per copied disk
    for (std::size_t i = 0; i < lines.size(); ++i) {
        if (lines[i]["phase"] != "copy") continue;
        std::string item = lines[i]["item"];
        std::uint64_t done = lines[i]["bytes_done"];
        EXPECT_GE(done, last_bytes[item]) << "bytes went back at line " << i;
        last_bytes[item] = done;
    }
    for (const auto& d : vm["disks"]) {
        std::string item = g.name() + "/" + d["disk"].get<std::string>();
        EXPECT_EQ(last_bytes[item], d["size"].get<std::uint64_t>()) << item;
    }

    // The second run reads every byte again (--full), and is interrupted midway.
    fs::path output = dir / "cancelled.out";
    ChildGuard child;
    child.pid = start_vmshadow_in_own_group(
        args_with_repo({"backup", g.name(), "--full", "--progress=json", "--writers-dir",
                        writers_dir.string(), "--state-file", state_file.string()}),
        output.string());
    ASSERT_GT(child.pid, 0);
    ASSERT_TRUE(wait_for_phase(output, child.pid, "copy", 300s)) << read_text(output);
    auto interrupted_at = std::chrono::steady_clock::now();
    ASSERT_EQ(::kill(child.pid, SIGINT), 0);
    int code = wait_exit(child.pid, 120s);
    auto took = std::chrono::steady_clock::now() - interrupted_at;
    std::string text = read_text(output);
    ASSERT_EQ(code, 12) << text;
    child.pid = -1;
    std::cerr << "cancel took "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";
    EXPECT_NE(text.find("nothing was kept"), std::string::npos) << text;
    EXPECT_NE(text.find(good_point.substr(0, 12)), std::string::npos)
        << "names the last good point: " << text;

    expect_no_job_and_running(g);
    EXPECT_EQ(freeze_status(g), "thawed");
    EXPECT_TRUE(scratch_leftovers().empty());
    EXPECT_EQ(checkpoints(g), std::vector<std::string>{good_checkpoint});
    EXPECT_TRUE(lock_files().empty());
    auto points = run({"points", g.name(), "--json"});
    ASSERT_EQ(points.exit_code, 0) << points.err;
    EXPECT_EQ(json::parse(points.out).size(), 1u) << points.out;
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

    auto next = backup_ok({g.name()});
    EXPECT_EQ(mode_of(next, "vdb"), "incremental") << next.dump(2);
    EXPECT_EQ(next["incremental_from"], good_checkpoint) << next.dump(2);
}

TEST_F(CancelTest, InterruptedImageRestoreLeavesNoFile) {
    // An image point of 1 GiB of random data: no guest needed.
    fs::path image = dir / "random.raw";
    auto fill = lab::run_process({"sh", "-c", "head -c 1G /dev/urandom > " + image.string()});
    ASSERT_TRUE(fill && fill->exit_code == 0);
    auto made = run({"image", "backup", image.string(), "--name", "cancel-img", "--json"});
    ASSERT_EQ(made.exit_code, 0) << made.err;
    fs::remove(image);

    // Progress of a whole restore ends at the size the command reports.
    fs::path whole = dir / "whole.raw";
    auto restored =
        run({"image", "restore", "cancel-img@latest", whole.string(), "--json", "--progress=json"});
    ASSERT_EQ(restored.exit_code, 0) << restored.err;
    auto lines = progress_lines(restored.err);
    ASSERT_FALSE(lines.empty()) << restored.err;
    EXPECT_EQ(lines.back()["phase"], "write");
    EXPECT_EQ(lines.back()["bytes_done"], json::parse(restored.out)["size"]);
    fs::remove(whole);

    fs::path target = dir / "restored.raw", output = dir / "restore.out";
    ChildGuard child;
    child.pid = start_vmshadow_in_own_group(
        args_with_repo({"image", "restore", "cancel-img@latest", target.string(), "--format",
                        "qcow2", "--progress=json"}),
        output.string());
    ASSERT_GT(child.pid, 0);
    if (!wait_for_phase(output, child.pid, "write", 120s))
        GTEST_SKIP() << "the restore finished before it could be interrupted: "
                     << read_text(output);
    ASSERT_EQ(::kill(child.pid, SIGINT), 0);
    int code = wait_exit(child.pid, 120s);
    ASSERT_EQ(code, 12) << read_text(output);
    child.pid = -1;
    EXPECT_FALSE(fs::exists(target));
    EXPECT_FALSE(fs::exists(target.string() + ".vmshadow-partial"));
    EXPECT_TRUE(lock_files().empty());
}

TEST_F(CancelTest, BackupCancelledInTheFreezeOrTheCommitKeepsNothingAndSoDoesACancelledGc) {
    lab::LabGuest& g = boot({});
    std::string good = backup_ok({g.name()})["checkpoint"];
    std::size_t points = 1;

    // The freeze: the guest's freeze hook sleeps 4 s before the filesystems freeze (a slow
    // application quiescing); the interrupt lands while the agent's freeze call waits for it.
    ASSERT_TRUE(g.exec("echo 4 > /run/lab/freeze-delay"));
    auto in_freeze = interrupt(backup_args({g.name()}), "", R"("phase":"snapshot")", 1500ms);
    ASSERT_TRUE(g.exec("rm -f /run/lab/freeze-delay"));
    EXPECT_EQ(in_freeze.code, 12) << in_freeze.text;
    EXPECT_NE(in_freeze.text.find("nothing was kept"), std::string::npos) << in_freeze.text;
    EXPECT_LT(in_freeze.took, 10s) << "the hook's last 2.5 s, then the abort";
    auto hook_log = g.read_file("/var/log/fsfreeze-hook.log");
    ASSERT_TRUE(hook_log);
    EXPECT_NE(hook_log->find("sleeping 4s first"), std::string::npos) << *hook_log;
    ASSERT_NO_FATAL_FAILURE(expect_nothing_kept(g, good, points));
    good = expect_next_incremental(g, good);
    ++points;

    // The commit: before BackupComplete (the writers hear Abort, never "complete" of a point
    // that is not kept) and after it, just before the commit record is written. An exec
    // writer logs the events it hears.
    const fs::path events = dir / "events.log";
    std::ofstream(writers_dir / "log.json") << json{
        {"name", "log"},
        {"command", {"/bin/sh", "-c", "echo \"$VMSHADOW_EVENT\" >> " + events.string()}},
        {"events", {"backup-complete", "abort"}}}.dump();
    for (const char* step : {"backup-commit", "backup-commit-write"}) {
        SCOPED_TRACE(step);
        fs::remove(events);
        auto in_commit = interrupt(backup_args({g.name()}), step);
        if (std::string(step) == "backup-commit")
            EXPECT_EQ(read_text(events), "abort\n");
        else
            EXPECT_EQ(read_text(events), "backup-complete\n");
        EXPECT_EQ(in_commit.code, 12) << in_commit.text;
        EXPECT_NE(in_commit.text.find("nothing was kept"), std::string::npos) << in_commit.text;
        EXPECT_LT(in_commit.took, 5s);
        ASSERT_NO_FATAL_FAILURE(expect_nothing_kept(g, good, points));
        good = expect_next_incremental(g, good);
        ++points;
    }

    // gc, interrupted while it marks: nothing deleted, the repository clean, the next gc fine.
    fs::remove(writers_dir / "log.json");
    auto in_gc = interrupt(args_with_repo({"gc", "--grace", "0"}), "gc-mark");
    EXPECT_EQ(in_gc.code, 12) << in_gc.text;
    EXPECT_LT(in_gc.took, 5s);
    EXPECT_TRUE(lock_files().empty()) << ::testing::PrintToString(lock_files());
    auto check = run({"repo", "check", "--read-data"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    auto gc = run({"gc", "--grace", "0"});
    EXPECT_EQ(gc.exit_code, 0) << gc.out << gc.err;
    ASSERT_NO_FATAL_FAILURE(expect_nothing_kept(g, good, points));
    expect_next_incremental(g, good);
}

TEST_F(CancelTest, RestoreCancelledWhileWritingOrBeforeItsSwapLeavesTheVmAsItWas) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo before > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"], good = vm["checkpoint"];
    ASSERT_TRUE(g.exec("echo after > /var/lib/lab/marker && sync"));
    const std::string xml = dumpxml(g.name());
    auto files_of = [&] {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(g.dir()))
            names.push_back(e.path().filename().string());
        std::sort(names.begin(), names.end());
        return names;
    };
    const auto files = files_of();

    for (const char* step : {"restore-write", "restore-before-swap"}) {
        SCOPED_TRACE(step);
        auto cancelled = interrupt(
            args_with_repo({"restore", point, "--replace", "--start", "--progress=json"}), step);
        EXPECT_EQ(cancelled.code, 12) << cancelled.text;
        // "nothing was changed", or "stopped before anything was changed" from a disk's write.
        EXPECT_NE(cancelled.text.find("was changed"), std::string::npos) << cancelled.text;
        EXPECT_LT(cancelled.took, 5s);
        expect_no_job_and_running(g);
        EXPECT_EQ(dumpxml(g.name()), xml) << "the VM's definition is untouched";
        EXPECT_EQ(files_of(), files) << "no restored file, no journal beside the old disks";
        auto marker = g.read_file("/var/lib/lab/marker");
        ASSERT_TRUE(marker) << marker.error().message();
        EXPECT_EQ(*marker, "after\n") << "the VM runs on its own disk";
        EXPECT_EQ(checkpoints(g), std::vector<std::string>{good});
        EXPECT_TRUE(lock_files().empty()) << ::testing::PrintToString(lock_files());
    }
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    expect_next_incremental(g, good);
}

TEST_F(CancelTest, InstantRecoveryCancelledDuringItsCopyRunsOnAndTheSameCommandFinishesIt) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo instant > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"], good = vm["checkpoint"];
    RestoredVm copy{g.name().substr(0, 40) + "-ic", dir / "instant"};
    const std::vector<std::string> command{"--repo",  repo.string(), "restore",
                                           point,     "--instant",   "--as",
                                           copy.name, "--to",        copy.folder.string()};
    // 1 MiB/s: the copy lasts long enough to be interrupted midway.
    auto capped = command;
    capped.insert(capped.end(), {"--bandwidth", "1", "--progress=json"});
    fs::path output = dir / "instant.out";
    ChildGuard child;
    child.pid = start_vmshadow_in_own_group(capped, output.string());
    ASSERT_GT(child.pid, 0);
    ASSERT_TRUE(wait_for_phase(output, child.pid, "copy", 300s)) << read_text(output);
    auto at = std::chrono::steady_clock::now();
    ASSERT_EQ(::kill(child.pid, SIGINT), 0);
    int code = wait_exit(child.pid, 120s);
    auto took = std::chrono::steady_clock::now() - at;
    std::string text = read_text(output);
    ASSERT_EQ(code, 12) << text;
    child.pid = -1;
    EXPECT_LT(took, 5s);
    // Documented: the VM keeps running on its exports, and the same command resumes.
    EXPECT_NE(text.find("cancelled during its copy"), std::string::npos) << text;
    EXPECT_NE(text.find("--instant --as " + copy.name), std::string::npos) << text;
    ASSERT_TRUE(agent_answers(copy.name, 60s)) << "the VM runs on without vmshadow";
    expect_no_job_and_running(g);

    auto args = command;
    args.push_back("--json");
    auto resumed = run_vmshadow(args);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
    EXPECT_NE(json::parse(resumed.out)["notes"].dump().find("resumed"), std::string::npos)
        << resumed.out;
    std::string after = dumpxml(copy.name);
    EXPECT_EQ(after.find("protocol='nbd'"), std::string::npos) << after;
    EXPECT_TRUE(agent_answers(copy.name, 60s)) << "the finished copy answers";
    EXPECT_TRUE(lock_files().empty()) << ::testing::PrintToString(lock_files());
    auto check = run({"repo", "check"});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    expect_next_incremental(g, good);
}

}  // namespace
}  // namespace vmshadow::testing
