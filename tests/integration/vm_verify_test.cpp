// SPDX-License-Identifier: MIT
// `vmshadow verify --boot` on a real lab guest's restore point: the point boots in a throwaway
// VM served from the repository (the guest agent lives on the restored disk, so an answer
// proves it), a command in the guest decides success, the result is an annotation, and nothing
// is left behind.
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

}  // namespace
}  // namespace vmshadow::testing
