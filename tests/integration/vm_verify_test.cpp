// SPDX-License-Identifier: MIT
// `vmshadow verify --boot` on a real lab guest's restore point: the point boots in a throwaway
// VM served from the repository (the guest agent lives on the restored disk, so an answer
// proves it), a command in the guest decides success, the result is an annotation, and nothing
// is left behind; a point with a corrupted chunk, or of a guest that cannot come up, fails
// within the timeout, is recorded as failed, and leaves nothing behind either.
#include <signal.h>
#include <stdlib.h>

#include <thread>

#include "integration/repo_damage.h"
#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

TEST_F(VmBackupTest, VerifyBootProvesThePointBootsAndRecordsIt) {
    lab::LabGuest& g = boot({});
    ASSERT_TRUE(g.exec("echo proof > /var/lib/lab/marker && sync"));
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];

    auto ok = run({"verify", point, "--boot", "--exec", "grep -q proof /var/lib/lab/marker",
                   "--timeout", "240", "--json"});
    ASSERT_EQ(ok.exit_code, 0) << ok.out << ok.err;
    auto j = json::parse(ok.out);
    EXPECT_TRUE(j["ok"].get<bool>());
    EXPECT_EQ(j["exec_exit_code"], 0);

    auto bad = run({"verify", point, "--boot", "--exec", "exit 3", "--timeout", "240", "--json"});
    EXPECT_EQ(bad.exit_code, 12) << bad.out << bad.err;
    EXPECT_FALSE(json::parse(bad.out)["ok"].get<bool>());

    auto points = run({"points", g.name(), "--json"});
    ASSERT_EQ(points.exit_code, 0);
    auto annotations = json::parse(points.out)[0]["annotations"];
    ASSERT_EQ(annotations.size(), 2u) << points.out;
    int passed = 0;
    for (const auto& a : annotations) {
        EXPECT_EQ(a["kind"], "boot_verification");
        passed += a["data"]["ok"].get<bool>() ? 1 : 0;
    }
    EXPECT_EQ(passed, 1);
    // The throwaway VMs, their NBD servers and files are gone.
    auto list = lab::run_checked({"virsh", "-c", lab::lab_uri(), "list", "--all", "--name"});
    ASSERT_TRUE(list);
    EXPECT_EQ(list->find("vmshadow-verify-" + point.substr(0, 8)), std::string::npos) << *list;
    EXPECT_TRUE(scratch_leftovers().empty());
    auto nbdkit = lab::run_process({"pgrep", "-f", "point=" + point});
    ASSERT_TRUE(nbdkit);
    EXPECT_NE(nbdkit->exit_code, 0) << "no nbdkit left serving the point: " << nbdkit->out;
}

// A guest defined but never started: its offline backup needs no boot (TCG boots are slow).
lab::LabGuest& define_only(std::list<lab::LabGuest>& guests, const lab::GuestOptions& o) {
    auto guest = lab::LabGuest::create(o, current_test_name());
    if (!guest) throw std::runtime_error("create: " + guest.error().message());
    guests.push_back(std::move(*guest));
    return guests.back();
}

// What a failed verification must leave: one failed boot_verification annotation on the point
// (with `detail`), no throwaway VM, no NBD server serving the point, an empty scratch folder.
#define EXPECT_FAILED_AND_NOTHING_LEFT(vm, point, detail)                                          \
    do {                                                                                           \
        auto points_ = run({"points", vm, "--json"});                                              \
        ASSERT_EQ(points_.exit_code, 0) << points_.err;                                            \
        auto annotations_ = json::parse(points_.out)[0]["annotations"];                            \
        ASSERT_EQ(annotations_.size(), 1u) << points_.out;                                         \
        EXPECT_EQ(annotations_[0]["kind"], "boot_verification");                                   \
        EXPECT_FALSE(annotations_[0]["data"]["ok"].get<bool>()) << points_.out;                    \
        EXPECT_EQ(annotations_[0]["data"]["detail"], detail) << points_.out;                       \
        auto list_ = lab::run_checked({"virsh", "-c", lab::lab_uri(), "list", "--all", "--name"}); \
        ASSERT_TRUE(list_);                                                                        \
        EXPECT_EQ(list_->find("vmshadow-verify-" + point.substr(0, 8)), std::string::npos)         \
            << *list_;                                                                             \
        EXPECT_TRUE(scratch_leftovers().empty());                                                  \
        auto nbdkit_ = lab::run_process({"pgrep", "-f", "point=" + point});                        \
        ASSERT_TRUE(nbdkit_);                                                                      \
        EXPECT_NE(nbdkit_->exit_code, 0) << "no nbdkit left serving the point: " << nbdkit_->out;  \
    } while (false)

TEST_F(VmBackupTest, VerifyBootFailsOnAPointWithACorruptedChunkAndNamesTheDamage) {
    lab::LabGuest& g = define_only(guests, {});
    json vm = backup_ok({g.name()});
    ASSERT_EQ(vm["consistency"], "offline") << vm.dump(2);
    const std::string point = vm["point"];
    // Chunk 0 of vda holds the root filesystem's superblock: the guest cannot mount it.
    fs::path pack = corrupt_chunk(repo, point, "vda", 0);

    auto out = run({"verify", point, "--boot", "--timeout", "60", "--json"});
    EXPECT_NE(out.exit_code, 0) << out.out << out.err;
    EXPECT_EQ(out.exit_code, 8) << "damaged data: " << out.out << out.err;
    auto j = json::parse(out.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out.out << out.err;
    EXPECT_FALSE(j["ok"].get<bool>());
    const std::string detail = j["detail"];
    EXPECT_NE(detail.find("damaged"), std::string::npos) << detail;
    EXPECT_NE(detail.find(pack.filename().string()), std::string::npos)
        << "the detail names the damaged pack: " << detail;
    EXPECT_NE(j.value("error", "").find(pack.filename().string()), std::string::npos) << out.out;
    // The annotation holds what the engine saw: the boot failed, and the damage its NBD
    // server reported (the command's detail adds a check of the point's chunks).
    auto points = run({"points", g.name(), "--json"});
    ASSERT_EQ(points.exit_code, 0) << points.err;
    const std::string recorded =
        json::parse(points.out)[0]["annotations"][0]["data"].value("detail", "");
    EXPECT_NE(recorded.find("did not answer"), std::string::npos) << recorded;
    EXPECT_NE(recorded.find("disk vda: the repository's data is damaged"), std::string::npos)
        << recorded;
    EXPECT_FAILED_AND_NOTHING_LEFT(g.name(), point, recorded);
}

TEST_F(VmBackupTest, VerifyBootFailsOnAnIntactPointOfAGuestThatCannotComeUp) {
    lab::GuestOptions o;
    o.root_format = "raw";  // debugfs edits raw images
    lab::LabGuest& g = define_only(guests, o);
    // The guest's init is gone before the backup: its initramfs finds no /sbin/init on vda and
    // powers off. The point itself is intact.
    auto removed =
        lab::run_process({"debugfs", "-w", "-R", "rm /sbin/init", g.disk_path("vda").string()});
    ASSERT_TRUE(removed && removed->exit_code == 0);
    ASSERT_FALSE(lab::read_file_from_image(g.disk_path("vda"), "/sbin/init"));
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    ASSERT_EQ(run({"repo", "check", "--read-data"}).exit_code, 0) << "the point is intact";

    auto out = run({"verify", point, "--boot", "--timeout", "60", "--json"});
    EXPECT_EQ(out.exit_code, 12) << out.out << out.err;
    auto j = json::parse(out.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out.out << out.err;
    EXPECT_FALSE(j["ok"].get<bool>());
    const std::string detail = j["detail"];
    EXPECT_NE(detail.find("did not answer: it powered off"), std::string::npos) << detail;
    EXPECT_NE(detail.find("/sbin/init"), std::string::npos) << "its console says why: " << detail;
    EXPECT_NE(j.value("error", "").find("boot verification failed"), std::string::npos) << out.out;
    EXPECT_EQ(detail.find("damaged"), std::string::npos) << "the data is intact: " << detail;
    EXPECT_FAILED_AND_NOTHING_LEFT(g.name(), point, detail);
}

// verify --boot killed (kill -9) once its servers run: they die with it (PR_SET_PDEATHSIG),
// so nothing holds the repository's lock and gc works.
TEST_F(VmBackupTest, VerifyBootKilledOnceItsServersRunLeavesNoServer) {
    lab::LabGuest& g = boot({});
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    std::vector<std::string> args{"--repo",         repo.string(), "--scratch-dir",
                                  scratch.string(), "verify",      point,
                                  "--boot",         "--timeout",   "240"};
    ::setenv("VMSHADOW_TEST_KILL_AT", "verify-servers-started", 1);
    auto killed = run_vmshadow(args);
    ::unsetenv("VMSHADOW_TEST_KILL_AT");
    ASSERT_EQ(killed.exit_code, 128 + SIGKILL) << killed.out << killed.err;
    bool gone = false;
    for (int i = 0; i < 50 && !gone; ++i) {
        auto nbdkit = lab::run_process({"pgrep", "-f", "point=" + point});
        gone = nbdkit && nbdkit->exit_code != 0;
        if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(gone) << "an NBD server outlived verify --boot";
    auto gc = run({"gc"});
    EXPECT_EQ(gc.exit_code, 0) << gc.out << gc.err;
}

}  // namespace
}  // namespace vmshadow::testing
