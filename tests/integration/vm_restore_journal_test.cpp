// SPDX-License-Identifier: MIT
// No fault leaves a VM undefined or two operations on one VM interleaved (issue 18, items 3
// and 5), on real TCG lab guests: a `restore --replace` killed at each of its steps in turn
// (the VMSHADOW_TEST_KILL_AT test hook) leaves a complete VM defined — its files all old or
// all new — and the next run finishes or rolls back, leaving no journal or aside file (a
// saved-state point killed after the switch is finished and resumed by the next run); two
// backups of one VM started together: one succeeds, the other exits 6 naming it; a restore
// --replace while a backup of that VM runs is refused with exit 6, the VM untouched.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <map>
#include <pugixml.hpp>
#include <set>
#include <sstream>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

void write_file(const fs::path& p, const std::string& text) {
    std::ofstream out(p);
    out << text;
}

std::string read_all(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string inactive_xml(const std::string& vm) {
    auto r = lab::run_process({"virsh", "-c", lab::lab_uri(), "dumpxml", "--inactive", vm});
    return r && r->exit_code == 0 ? r->out : std::string();
}

// The host files a definition uses: disk sources, kernel, initrd.
std::vector<std::string> files_of(const std::string& xml) {
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    std::vector<std::string> out;
    auto dom = doc.child("domain");
    for (auto disk : dom.child("devices").children("disk"))
        if (auto f = disk.child("source").attribute("file")) out.push_back(f.value());
    for (const char* role : {"kernel", "initrd"})
        if (auto n = dom.child("os").child(role)) out.push_back(n.text().get());
    return out;
}

ino_t inode(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

std::vector<std::string> leftovers(const fs::path& folder) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(folder))
        if (e.path().filename().string().find(".vmshadow-") != std::string::npos)
            out.push_back(e.path().string());
    return out;
}

// VMSHADOW_TEST_KILL_AT for the scope of one command (run() inherits the environment).
struct KillAt {
    explicit KillAt(const std::string& step) { ::setenv("VMSHADOW_TEST_KILL_AT", step.c_str(), 1); }
    ~KillAt() { ::unsetenv("VMSHADOW_TEST_KILL_AT"); }
};

int wait_exit(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class VmOperationTest : public VmBackupTest {
  protected:
    void expect_repo_checks() {
        auto check = run({"repo", "check"});
        EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    }
    void expect_running_and_thawed(lab::LabGuest& g) {
        auto s = g.domain().state();
        ASSERT_TRUE(s) << s.error().message();
        EXPECT_EQ(*s, virt::DomainState::running);
        EXPECT_EQ(freeze_status(g), "thawed");
    }
    std::vector<std::string> backup_args(const lab::LabGuest& g) {
        return {"--repo",         repo.string(),      "--scratch-dir",
                scratch.string(), "backup",           g.name(),
                "--json",         "--writers-dir",    writers_dir.string(),
                "--state-file",   state_file.string()};
    }
};

TEST_F(VmOperationTest, RestoreReplaceKilledAtEachStepLeavesACompleteVmAndTheNextRunFinishesIt) {
    lab::GuestOptions o;
    o.data_disks = {lab::DataDisk{}};
    lab::LabGuest& g = boot(o);
    ASSERT_TRUE(g.exec("echo backed-up > /var/lib/lab/marker && sync"));
    const std::string point = backup_ok({g.name()})["point"];
    ASSERT_TRUE(g.exec("echo later > /var/lib/lab/marker && sync"));

    // Before "committed" the old VM is put back; from it on, the restore is finished.
    const std::vector<std::pair<std::string, std::string>> steps{{"staged", ""},
                                                                 {"journal", "rolled back"},
                                                                 {"stopped", "rolled back"},
                                                                 {"committed", "finished"},
                                                                 {"swap", "finished"},
                                                                 {"swapped", "finished"},
                                                                 {"defined", "finished"},
                                                                 {"cleaned", "finished"}};
    for (const auto& [step, recovery] : steps) {
        SCOPED_TRACE("killed at " + step);
        std::set<ino_t> old;
        for (const auto& f : files_of(inactive_xml(g.name()))) old.insert(inode(f));
        ASSERT_EQ(old.size(), 4u) << "root, vdb, kernel, initrd";
        {
            KillAt kill(step);
            auto killed = run({"restore", point, "--replace"});
            ASSERT_EQ(killed.exit_code, 128 + SIGKILL) << killed.out << killed.err;
        }
        // A complete VM is defined: every file it names exists, all old or all new.
        std::string xml = inactive_xml(g.name());
        ASSERT_FALSE(xml.empty()) << "the VM is defined";
        std::size_t old_files = 0, files = 0;
        for (const auto& f : files_of(xml)) {
            ++files;
            ASSERT_NE(inode(f), 0u) << f << " exists";
            old_files += old.count(inode(f));
        }
        EXPECT_EQ(files, 4u);
        EXPECT_TRUE(old_files == 0 || old_files == files)
            << old_files << " of " << files << " files are the old VM's:\n"
            << xml;

        if (step == "swap") {
            // Mid-restore, a backup would record the staged names: refused until it finishes.
            auto refused = backup({g.name()});
            EXPECT_EQ(refused.exit_code, 6) << refused.out << refused.err;
            EXPECT_NE(refused.out.find("an interrupted restore left"), std::string::npos)
                << refused.out;
        }
        auto next = run({"restore", point, "--replace", "--json"});
        ASSERT_EQ(next.exit_code, 0) << next.out << next.err;
        if (!recovery.empty()) {
            EXPECT_NE(next.out.find(recovery + " an interrupted restore"), std::string::npos)
                << next.out;
        }
        EXPECT_TRUE(leftovers(g.dir()).empty())
            << "no journal, staged or aside file: " << leftovers(g.dir()).front();
        for (const auto& f : files_of(inactive_xml(g.name()))) {
            EXPECT_EQ(f.find(".vmshadow"), std::string::npos) << f;
            EXPECT_EQ(old.count(inode(f)), 0u) << f << " is the restored file";
        }
    }
    auto last = run({"restore", point, "--replace", "--start"});
    ASSERT_EQ(last.exit_code, 0) << last.out << last.err;
    ASSERT_TRUE(agent_answers(g.name(), 240s)) << "the restored VM boots";
    auto marker = g.read_file("/var/lib/lab/marker");
    ASSERT_TRUE(marker) << marker.error().message();
    EXPECT_EQ(*marker, "backed-up\n");
    expect_running_and_thawed(g);
    expect_repo_checks();
}

TEST_F(VmOperationTest, SavedStateRestoreKilledAfterTheSwitchIsFinishedAndResumedByTheNextRun) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo saved > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name(), "--method", "image"});
    ASSERT_EQ(vm["consistency"], "image");
    const std::string point = vm["point"];
    ASSERT_TRUE(g.exec("echo later > /var/lib/lab/marker && sync"));
    {
        KillAt kill("swapped");
        auto killed = run({"restore", point, "--replace"});
        ASSERT_EQ(killed.exit_code, 128 + SIGKILL) << killed.out << killed.err;
    }
    ASSERT_FALSE(inactive_xml(g.name()).empty()) << "the VM is defined";
    auto next = run({"restore", point, "--replace", "--json"});
    ASSERT_EQ(next.exit_code, 0) << next.out << next.err;
    EXPECT_NE(next.out.find("finished an interrupted restore"), std::string::npos) << next.out;
    EXPECT_TRUE(leftovers(g.dir()).empty()) << leftovers(g.dir()).front();
    ASSERT_TRUE(agent_answers(g.name(), 60s)) << "resumed from the saved memory";
    auto marker = g.read_file("/var/lib/lab/marker");
    ASSERT_TRUE(marker) << marker.error().message();
    EXPECT_EQ(*marker, "saved\n");
    expect_running_and_thawed(g);
    expect_repo_checks();
}

TEST_F(VmOperationTest, TwoBackupsOfOneVmStartedTogetherOneSucceedsTheOtherNamesIt) {
    lab::LabGuest& g = boot({});
    // Holds each backup a while before it touches the guest: they overlap for sure.
    write_file(writers_dir / "slow.json",
               R"({"name": "slow", "command": ["/bin/sh", "-c", "sleep 3"],
                   "events": ["prepare-backup"]})");
    pid_t a = start_vmshadow_in_own_group(backup_args(g), (dir / "a.out").string());
    pid_t b = start_vmshadow_in_own_group(backup_args(g), (dir / "b.out").string());
    ASSERT_GT(a, 0);
    ASSERT_GT(b, 0);
    int code_a = wait_exit(a), code_b = wait_exit(b);
    std::string out_a = read_all(dir / "a.out"), out_b = read_all(dir / "b.out");
    ASSERT_EQ(std::min(code_a, code_b), 0) << out_a << "\n" << out_b;
    ASSERT_EQ(std::max(code_a, code_b), 6) << out_a << "\n" << out_b;  // conflict
    pid_t winner = code_a == 0 ? a : b;
    const std::string& loser = code_a == 0 ? out_b : out_a;
    EXPECT_NE(loser.find("another vmshadow process"), std::string::npos) << loser;
    EXPECT_NE(loser.find("pid " + std::to_string(winner) + ", backup"), std::string::npos) << loser;
    expect_running_and_thawed(g);
    EXPECT_TRUE(scratch_leftovers().empty());
    expect_repo_checks();
}

TEST_F(VmOperationTest, RestoreReplaceWhileABackupRunsIsRefusedAndTheVmKeepsRunning) {
    lab::LabGuest& g = boot({});
    const std::string point = backup_ok({g.name()})["point"];
    ASSERT_TRUE(g.exec("echo running > /var/lib/lab/marker && sync"));
    // The backup holds the guest frozen for a while: the restore comes in mid-backup.
    write_file(writers_dir / "slow.json",
               R"({"name": "slow", "command": ["/bin/sh", "-c", "sleep 6"],
                   "events": ["freeze"]})");
    pid_t backup = start_vmshadow_in_own_group(backup_args(g), (dir / "backup.out").string());
    ASSERT_GT(backup, 0);
    bool frozen = false;
    for (int i = 0; i < 300 && !frozen; ++i) {
        frozen = freeze_status(g) == "frozen";
        if (!frozen) std::this_thread::sleep_for(100ms);
    }
    EXPECT_TRUE(frozen) << "the backup never froze the guest";
    auto refused = run({"restore", point, "--replace", "--start"});
    EXPECT_EQ(refused.exit_code, 6) << refused.out << refused.err;
    EXPECT_NE(refused.err.find("pid " + std::to_string(backup) + ", backup"), std::string::npos)
        << refused.err;
    EXPECT_EQ(wait_exit(backup), 0) << read_all(dir / "backup.out");
    expect_running_and_thawed(g);
    auto marker = g.read_file("/var/lib/lab/marker");
    ASSERT_TRUE(marker) << marker.error().message();
    EXPECT_EQ(*marker, "running\n") << "the VM was not restored";
    EXPECT_TRUE(leftovers(g.dir()).empty());
    expect_repo_checks();
}

}  // namespace
}  // namespace vmshadow::testing
