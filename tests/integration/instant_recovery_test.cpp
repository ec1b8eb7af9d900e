// SPDX-License-Identifier: MIT
// Instant recovery (`vmshadow restore POINT --instant`) of a multi-GiB disk on a real TCG
// lab guest: the VM runs from the repository's NBD export while the copy runs (capped with
// --bandwidth so that it is still running when the guest is up), the guest writes during the
// copy, the export's server is killed mid-copy — the VM pauses and the command says how to
// resume —, the same command resumes, and the VM ends on local disks holding every write; and a
// vmshadow killed mid-copy leaves the VM running for the same command to finish.
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
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

}  // namespace
}  // namespace vmshadow::testing
