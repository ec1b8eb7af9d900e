// SPDX-License-Identifier: MIT
// Every long operation is a task: `--progress=json` reports its phases and bytes, and the
// first SIGINT cancels it cleanly (exit 12) — the guest thawed and running, no libvirt job,
// no scratch, no new checkpoint, nothing referenced in the repository, the lock free, the
// next backup incremental from the last good point; a cancelled restore leaves no file.
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

class CancelTest : public VmBackupTest {
  protected:
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

}  // namespace
}  // namespace vmshadow::testing
