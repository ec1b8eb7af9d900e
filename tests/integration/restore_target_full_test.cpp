// SPDX-License-Identifier: MIT
// `vmshadow restore --as` onto a folder whose filesystem is too small (a tmpfs of 4 MiB): a
// one-line error that says the disk is full, no VM defined, no file left behind — and the
// same restore into a folder with room works.
#include <sys/mount.h>

#include "integration/vm_backup_fixture.h"

namespace vmshadow::testing {
namespace {

using namespace std::chrono_literals;

// A small tmpfs on `dir`, unmounted (and the directory removed) even when the test fails.
struct SmallFilesystem {
    fs::path dir;
    bool mounted = false;
    explicit SmallFilesystem(fs::path d) : dir(std::move(d)) {
        fs::create_directories(dir);
        mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=4m") == 0;
    }
    ~SmallFilesystem() {
        if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

TEST_F(VmBackupTest, RestoreOntoAFullDiskSaysSoAndLeavesNoVmAndNoFiles) {
    lab::LabGuest& g = boot({});
    json vm = backup_ok({g.name()});
    const std::string point = vm["point"];
    SmallFilesystem small(dir / "small");
    ASSERT_TRUE(small.mounted) << "mount tmpfs on " << small.dir;
    RestoredVm copy{g.name().substr(0, 40) + "-full", {}};

    auto full = run({"restore", point, "--as", copy.name, "--to", small.dir.string()});
    EXPECT_NE(full.exit_code, 0) << full.out << full.err;
    EXPECT_NE(full.err.find("full"), std::string::npos) << full.err;
    EXPECT_EQ(std::count(full.err.begin(), full.err.end(), '\n'), 1) << full.err;
    auto defined = lab::run_process({"virsh", "-c", lab::lab_uri(), "dominfo", copy.name});
    ASSERT_TRUE(defined);
    EXPECT_NE(defined->exit_code, 0) << "no VM defined: " << defined->out;
    EXPECT_TRUE(fs::is_empty(small.dir)) << "no file left behind";

    copy.folder = dir / "roomy";
    auto ok = run({"restore", point, "--as", copy.name, "--to", copy.folder.string()});
    EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
}

}  // namespace
}  // namespace vmshadow::testing
