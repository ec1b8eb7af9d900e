// SPDX-License-Identifier: MIT
// Instant recovery (`vmshadow restore POINT --instant`) of a multi-GiB disk on a real TCG
// lab guest: the VM runs from the repository's NBD export while the copy runs (capped with
// --bandwidth so that it is still running when the guest is up), the guest writes during the
// copy, the export's server is killed mid-copy — the VM pauses and the command says how to
// resume —, the same command resumes, and the VM ends on local disks holding every write; and a
// vmshadow killed mid-copy leaves the VM running for the same command to finish.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "integration/vm_backup_fixture.h"
#include "virt/connection.h"
#include "virt/guest_agent.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

std::string read_text_file(const fs::path& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Kills a vmshadow started in its own group unless the test reaped it.
struct StartedCommand {
    pid_t pid = -1;
    ~StartedCommand() {
        if (pid <= 0) return;
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
    // The exit code once it exits within `limit`; nullopt if it is still running.
    std::optional<int> wait(std::chrono::seconds limit) {
        for (auto end = std::chrono::steady_clock::now() + limit;
             std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(200ms)) {
            int status = 0;
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
        }
        return std::nullopt;
    }
};

Result<std::string> guest_exec(const std::string& vm, const std::string& command) {
    auto connection = virt::Connection::open(lab::lab_uri());
    if (!connection) return std::unexpected(connection.error());
    auto domain = connection->lookup(vm);
    if (!domain) return std::unexpected(domain.error());
    virt::GuestAgent agent(*domain, 10s);
    auto r = agent.exec(command, 300s);
    if (!r) return std::unexpected(r.error());
    if (r->exit_code != 0)
        return fail(ErrorKind::internal,
                    command + " exited " + std::to_string(r->exit_code) + ": " + r->err);
    return r->out;
}

TEST_F(VmBackupTest, InstantRecoveryOfAMultiGibDiskPausesWhenItsServerDiesAndResumes) {
    lab::GuestOptions o;
    o.data_disks = {{lab::DataDisk::Kind::ext4, "3G"}};
    lab::LabGuest& g = boot(o);
    auto sum = g.exec(
        "dd if=/dev/urandom of=/data/vdb/blob bs=1M count=128 2>/dev/null && sync && "
        "md5sum /data/vdb/blob",
        300s);
    ASSERT_TRUE(sum) << sum.error().message();
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    RestoredVm copy{g.name().substr(0, 40) + "-ir", dir / "instant"};
    const fs::path data_disk = copy.folder / g.disk_path("vdb").filename();
    const fs::path work = copy.folder / (".vmshadow-instant-" + copy.name);
    const std::vector<std::string> command{"--repo",  repo.string(), "restore",
                                           point,     "--instant",   "--as",
                                           copy.name, "--to",        copy.folder.string()};

    // 1 MiB/s: the copy of vdb's 128+ MiB outlasts the guest's boot from the repository.
    auto capped = command;
    capped.insert(capped.end(), {"--bandwidth", "1"});
    fs::path first_log = dir / "instant-first.log";
    StartedCommand first{start_vmshadow_in_own_group(capped, first_log.string())};
    ASSERT_GT(first.pid, 0);
    ASSERT_TRUE(agent_answers(copy.name, 300s)) << read_text_file(first_log);
    std::string during = dumpxml(copy.name);
    EXPECT_NE(during.find("protocol='nbd'"), std::string::npos) << during;
    EXPECT_NE(during.find("<mirror"), std::string::npos) << "the copy runs: " << during;
    auto blk = lab::run_checked(
        {"virsh", "-c", lab::lab_uri(), "domblkinfo", copy.name, "vdb", "--human"});
    ASSERT_TRUE(blk);
    EXPECT_NE(blk->find("3.000 GiB"), std::string::npos) << *blk;
    ASSERT_TRUE(guest_exec(copy.name, "echo during-copy > /data/vdb/written && sync"));

    // The export's server dies mid-copy: the VM pauses and the command says how to go on.
    std::string server_pid = read_text_file(work / "vdb.pid");
    ASSERT_FALSE(server_pid.empty());
    ASSERT_EQ(::kill(std::stoi(server_pid), SIGKILL), 0);
    auto code = first.wait(120s);
    ASSERT_TRUE(code) << "the restore did not stop when its server died";
    std::string said = read_text_file(first_log);
    EXPECT_NE(*code, 0) << said;
    EXPECT_NE(said.find("paused"), std::string::npos) << said;
    EXPECT_NE(said.find("--instant --as " + copy.name), std::string::npos) << said;
    auto state = lab::run_checked({"virsh", "-c", lab::lab_uri(), "domstate", copy.name});
    ASSERT_TRUE(state);
    EXPECT_NE(state->find("paused"), std::string::npos) << *state;

    // The same command resumes: the server restarts, the copy finishes, the VM switches.
    auto args = command;
    args.push_back("--json");
    auto resumed = run_vmshadow(args);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
    auto j = json::parse(resumed.out);
    EXPECT_TRUE(j["instant"].get<bool>());
    EXPECT_NE(j["notes"].dump().find("resumed"), std::string::npos) << j.dump(2);
    std::string after = dumpxml(copy.name);
    EXPECT_EQ(after.find("protocol='nbd'"), std::string::npos) << after;
    EXPECT_NE(after.find(data_disk.string()), std::string::npos) << after;
    auto info = lab::run_checked({"virsh", "-c", lab::lab_uri(), "dominfo", copy.name});
    ASSERT_TRUE(info);
    EXPECT_NE(info->find("Persistent:     yes"), std::string::npos) << *info;
    ASSERT_TRUE(agent_answers(copy.name, 120s));
    auto seen = guest_exec(copy.name, "cat /data/vdb/written; md5sum /data/vdb/blob");
    ASSERT_TRUE(seen) << seen.error().message();
    EXPECT_EQ(*seen, "during-copy\n" + *sum);

    // On the local image itself, not only in the guest's page cache.
    ASSERT_TRUE(lab::run_checked({"virsh", "-c", lab::lab_uri(), "destroy", copy.name}));
    auto written = lab::read_file_from_image(data_disk, "/written");
    ASSERT_TRUE(written) << written.error().message();
    EXPECT_EQ(*written, "during-copy\n");
    auto nbdkit = lab::run_process({"pgrep", "-f", "point=" + point});
    ASSERT_TRUE(nbdkit);
    EXPECT_NE(nbdkit->exit_code, 0) << "no NBD server left: " << nbdkit->out;
    EXPECT_FALSE(fs::exists(work));
}

// vmshadow itself killed mid-copy: its servers outlive it, so the VM keeps running from the
// repository, and the same command picks the run up and finishes it.
TEST_F(VmBackupTest, InstantRecoveryWhoseVmshadowWasKilledKeepsRunningAndTheSameCommandFinishes) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo killed > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    RestoredVm copy{g.name().substr(0, 40) + "-ik", dir / "instant"};
    const std::vector<std::string> command{"--repo",  repo.string(), "restore",
                                           point,     "--instant",   "--as",
                                           copy.name, "--to",        copy.folder.string()};
    auto capped = command;
    capped.insert(capped.end(), {"--bandwidth", "1"});
    fs::path log = dir / "instant-killed.log";
    StartedCommand first{start_vmshadow_in_own_group(capped, log.string())};
    ASSERT_GT(first.pid, 0);
    ASSERT_TRUE(agent_answers(copy.name, 300s)) << read_text_file(log);
    ASSERT_NE(dumpxml(copy.name).find("<mirror"), std::string::npos) << "still copying";
    ::kill(-first.pid, SIGKILL);
    ASSERT_TRUE(first.wait(30s));
    std::this_thread::sleep_for(2s);
    ASSERT_TRUE(agent_answers(copy.name, 30s)) << "the VM runs on without vmshadow";

    auto args = command;
    args.push_back("--json");
    auto resumed = run_vmshadow(args);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
    EXPECT_NE(json::parse(resumed.out)["notes"].dump().find("resumed"), std::string::npos)
        << resumed.out;
    std::string after = dumpxml(copy.name);
    EXPECT_EQ(after.find("protocol='nbd'"), std::string::npos) << after;
    auto info = lab::run_checked({"virsh", "-c", lab::lab_uri(), "dominfo", copy.name});
    ASSERT_TRUE(info);
    EXPECT_NE(info->find("Persistent:     yes"), std::string::npos) << *info;
    auto seen = guest_exec(copy.name, "cat /var/lib/lab/marker");
    ASSERT_TRUE(seen) << seen.error().message();
    EXPECT_EQ(*seen, "killed\n");
    auto nbdkit = lab::run_process({"pgrep", "-f", "point=" + point});
    ASSERT_TRUE(nbdkit);
    EXPECT_NE(nbdkit->exit_code, 0) << "no NBD server left: " << nbdkit->out;
}

// Live (not zombie: this host's init does not reap) nbdkit processes serving an overlay in
// `work`.
std::set<pid_t> servers_of(const fs::path& work) {
    std::set<pid_t> found;
    const std::string needle = "overlay=" + work.string() + "/";
    for (const auto& e : fs::directory_iterator("/proc")) {
        std::string pid = e.path().filename();
        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
        std::string stat = read_text_file(e.path() / "stat");
        auto close = stat.rfind(')');
        if (close == std::string::npos || stat.substr(close + 2, 1) == "Z") continue;
        std::string cmd = read_text_file(e.path() / "cmdline");
        std::replace(cmd.begin(), cmd.end(), '\0', ' ');
        if (cmd.find(needle) != std::string::npos) found.insert(std::stoi(pid));
    }
    return found;
}

// The server pids an instant recovery's record names, and the sessions it recorded before
// each server ran (a server whose pid it did not learn yet lives in one of them).
std::set<pid_t> recorded_servers(const fs::path& work) {
    std::set<pid_t> pids;
    auto j = json::parse(read_text_file(work / "instant.json"), nullptr, false);
    if (j.is_discarded()) return pids;
    for (const auto& d : j.value("disks", json::array())) {
        if (d.value("pid", -1) > 0) pids.insert(d.value("pid", -1));
        if (d.value("session_pid", -1) > 0) pids.insert(d.value("session_pid", -1));
    }
    return pids;
}

pid_t session_of(pid_t pid) {
    std::string stat = read_text_file("/proc/" + std::to_string(pid) + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) return -1;
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 6 && in >> field; ++i) {
    }
    return static_cast<pid_t>(std::atol(field.c_str()));
}

// The socket folders instant recoveries of `point` left under /run/vmshadow/instant.
std::vector<std::string> socket_dirs_of(const std::string& point) {
    std::vector<std::string> dirs;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/run/vmshadow/instant", ec))
        if (e.path().filename().string().starts_with(point.substr(0, 12)))
            dirs.push_back(e.path().string());
    return dirs;
}

// How an instant recovery is killed: at a step (VMSHADOW_TEST_KILL_AT) or after a time.
struct EarlyKill {
    std::string step;
    std::chrono::milliseconds after{0};
    bool vm_runs = false;  // the step comes after the VM was created
    std::string text() const { return step.empty() ? std::to_string(after.count()) + " ms" : step; }
};

// A vmshadow killed (kill -9 of the process, not its group) at any early moment of an instant
// recovery leaves no server its record does not name; `repo unlock` stops the servers no VM
// runs on (and explains those one does), the same command cleans up or resumes and finishes,
// and afterwards no server, socket folder or work folder is left and gc works.
TEST_F(VmBackupTest, InstantRecoveryKilledEarlyLeavesNoServerItsRerunCannotStop) {
    lab::GuestOptions o;
    o.data_disks = {{lab::DataDisk::Kind::ext4, "64M"}};
    lab::LabGuest& g = boot(o);
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    const std::vector<EarlyKill> kills{{"instant-recorded"},
                                       {"instant-server-started"},
                                       {"instant-servers-started"},
                                       {"instant-vm-created", {}, true},
                                       {"instant-copying", {}, true},
                                       {"", 100ms},
                                       {"", 150ms},
                                       {"", 300ms},
                                       {"", 600ms}};
    {
        // What an older vmshadow killed before its record left: an nbdkit serving one of the
        // run's overlays that no record names. The same command stops it and starts over.
        SCOPED_TRACE("an unrecorded server of an older vmshadow");
        RestoredVm copy{g.name().substr(0, 40) + "-old", dir / "early-old"};
        const fs::path work = copy.folder / (".vmshadow-instant-" + copy.name);
        fs::create_directories(work);
        const std::string plugin = (fs::path(VMSHADOW_BINARY).parent_path() / ".." / "export" /
                                    "nbdkit-vmshadow-plugin.so")
                                       .lexically_normal()
                                       .string();
        auto orphan =
            lab::run_process({"sh", "-c",
                              "exec nbdkit --log=stderr -U " + (dir / "old.sock").string() + " " +
                                  plugin + " repo=" + repo.string() + " point=" + point +
                                  " disk=vda overlay=" + (work / "vda.overlay").string() +
                                  " </dev/null >/dev/null 2>&1"});
        ASSERT_TRUE(orphan && orphan->exit_code == 0);
        for (int i = 0; i < 100 && servers_of(work).empty(); ++i) std::this_thread::sleep_for(50ms);
        ASSERT_FALSE(servers_of(work).empty());
        auto rerun = run_vmshadow({"--repo", repo.string(), "restore", point, "--instant", "--as",
                                   copy.name, "--to", copy.folder.string(), "--json"});
        ASSERT_EQ(rerun.exit_code, 0) << rerun.out << rerun.err;
        EXPECT_NE(rerun.out.find("NBD server(s) an interrupted instant recovery left"),
                  std::string::npos)
            << rerun.out;
        EXPECT_EQ(servers_of(work), std::set<pid_t>{});
        EXPECT_FALSE(fs::exists(work));
        auto gc = run_vmshadow({"--repo", repo.string(), "gc"});
        EXPECT_EQ(gc.exit_code, 0) << gc.out << gc.err;
    }
    for (std::size_t i = 0; i < kills.size(); ++i) {
        const EarlyKill& kill = kills[i];
        SCOPED_TRACE("killed at " + kill.text());
        RestoredVm copy{g.name().substr(0, 40) + "-e" + std::to_string(i),
                        dir / ("early-" + std::to_string(i))};
        const fs::path work = copy.folder / (".vmshadow-instant-" + copy.name);
        const std::vector<std::string> command{"--repo",  repo.string(), "restore",
                                               point,     "--instant",   "--as",
                                               copy.name, "--to",        copy.folder.string()};
        fs::path log = dir / ("early-" + std::to_string(i) + ".log");
        if (!kill.step.empty()) ::setenv("VMSHADOW_TEST_KILL_AT", kill.step.c_str(), 1);
        StartedCommand first{start_vmshadow_in_own_group(command, log.string())};
        ::unsetenv("VMSHADOW_TEST_KILL_AT");
        ASSERT_GT(first.pid, 0);
        if (kill.step.empty()) {
            std::this_thread::sleep_for(kill.after);
            ::kill(first.pid, SIGKILL);
        }
        auto code = first.wait(120s);
        ASSERT_TRUE(code) << read_text_file(log);
        if (!kill.step.empty()) {
            ASSERT_EQ(*code, 128 + SIGKILL) << read_text_file(log);
        }

        // The invariant, at the instant of the kill: every server is named in the record.
        std::set<pid_t> recorded = recorded_servers(work);
        const std::set<pid_t> servers = servers_of(work);
        for (pid_t server : servers)
            EXPECT_TRUE(recorded.contains(server) || recorded.contains(session_of(server)))
                << "server " << server << " not recorded";
        if (kill.step == "instant-server-started" || kill.step == "instant-servers-started" ||
            kill.vm_runs) {
            EXPECT_FALSE(servers.empty()) << "the servers outlive vmshadow";
        }
        if (!kill.step.empty() && !kill.vm_runs) {
            // No VM runs on the servers: repo unlock stops them, and gc can run at once.
            auto unlock = run_vmshadow({"--repo", repo.string(), "repo", "unlock"});
            EXPECT_EQ(unlock.exit_code, 0) << unlock.out << unlock.err;
            if (!servers.empty()) {
                EXPECT_NE(unlock.out.find("stopped the NBD server"), std::string::npos)
                    << unlock.out;
            }
            EXPECT_EQ(servers_of(work), std::set<pid_t>{});
            auto gc = run_vmshadow({"--repo", repo.string(), "gc"});
            EXPECT_EQ(gc.exit_code, 0) << gc.out << gc.err;
        } else if (kill.vm_runs) {
            // The VM runs on them: they stay, and unlock says how to finish.
            auto unlock = run_vmshadow({"--repo", repo.string(), "repo", "unlock"});
            EXPECT_EQ(unlock.exit_code, 0) << unlock.out << unlock.err;
            EXPECT_NE(unlock.out.find("runs on it"), std::string::npos) << unlock.out;
            EXPECT_NE(unlock.out.find("--instant --as " + copy.name), std::string::npos)
                << unlock.out;
        }

        // A timed kill may come after the recovery finished (a small guest takes about 1 s):
        // then there is nothing to rerun, and the same end state is checked.
        if (*code != 0) {
            auto args = command;
            args.push_back("--json");
            auto rerun = run_vmshadow(args);
            ASSERT_EQ(rerun.exit_code, 0) << rerun.out << rerun.err << read_text_file(log);
            EXPECT_TRUE(json::parse(rerun.out)["instant"].get<bool>());
        }
        std::string after = dumpxml(copy.name);
        EXPECT_EQ(after.find("protocol='nbd'"), std::string::npos) << after;
        auto info = lab::run_checked({"virsh", "-c", lab::lab_uri(), "dominfo", copy.name});
        ASSERT_TRUE(info);
        EXPECT_NE(info->find("Persistent:     yes"), std::string::npos) << *info;
        EXPECT_NE(info->find("running"), std::string::npos) << *info;
        EXPECT_EQ(servers_of(work), std::set<pid_t>{});
        auto nbdkit = lab::run_process({"pgrep", "-f", "point=" + point});
        ASSERT_TRUE(nbdkit);
        EXPECT_NE(nbdkit->exit_code, 0) << "no NBD server left: " << nbdkit->out;
        EXPECT_FALSE(fs::exists(work));
        EXPECT_EQ(socket_dirs_of(point), std::vector<std::string>{});
        auto gc = run_vmshadow({"--repo", repo.string(), "gc"});
        EXPECT_EQ(gc.exit_code, 0) << gc.out << gc.err;
    }
}

}  // namespace
}  // namespace vmshadow::testing
