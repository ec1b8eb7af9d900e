// SPDX-License-Identifier: MIT
// VmLock and the restore journal's file steps, without libvirt: a second operation on a VM
// (by name or by UUID) conflicts and names the first; a released lock is free again; the
// journal survives a reload, and its swap is idempotent and leaves whole files.
#include "engine/vm_lock.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "engine/restore_journal.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

struct TempDir {
    fs::path path;
    TempDir() {
        std::string t = (fs::temp_directory_path() / "vmlock-test-XXXXXX").string();
        path = ::mkdtemp(t.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

void write(const fs::path& p, const std::string& text) {
    std::ofstream(p) << text;
}

TEST(VmLock, SecondOperationOnTheSameVmConflictsNamingTheFirst) {
    TempDir dir;
    auto first = VmLock::acquire({{"web1", "1111"}}, "backup", dir.path);
    ASSERT_TRUE(first) << first.error().message();
    auto second = VmLock::acquire({{"web1", ""}}, "restore --replace", dir.path);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().kind(), ErrorKind::conflict);
    const std::string& m = second.error().message();
    EXPECT_NE(m.find("pid " + std::to_string(::getpid()) + ", backup of VM 'web1', since"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("restore --replace refused"), std::string::npos) << m;
    // Another name, the same UUID (renamed meanwhile): still the same VM.
    auto renamed = VmLock::acquire({{"web1-renamed", "1111"}}, "backup", dir.path);
    ASSERT_FALSE(renamed);
    EXPECT_EQ(renamed.error().kind(), ErrorKind::conflict);
    EXPECT_TRUE(VmLock::acquire({{"db1", "2222"}}, "backup", dir.path)) << "another VM is free";
}

TEST(VmLock, OneVmNamedTwiceInOneAcquireIsLockedOnce) {
    TempDir dir;
    // A restore --as that resumes: the new name, then the same name with the VM's UUID.
    auto lock =
        VmLock::acquire({{"web1-ir", ""}, {"web1-ir", "1111"}}, "instant recovery", dir.path);
    EXPECT_TRUE(lock) << lock.error().message();
}

TEST(VmLock, ReleasedWhenTheHolderGoes) {
    TempDir dir;
    {
        auto held = VmLock::acquire({{"web/1", "1111"}}, "backup", dir.path);
        ASSERT_TRUE(held);
    }
    auto again = VmLock::acquire({{"web/1", "1111"}}, "backup", dir.path);
    EXPECT_TRUE(again) << again.error().message();
}

TEST(RestoreJournal, SurvivesAReloadAndItsSwapIsIdempotentAndLeavesWholeFiles) {
    TempDir dir;
    RestoreJournal j;
    j.path = RestoreJournal::path_for(dir.path, "web1");
    j.vm = "web1";
    j.point = "abc";
    j.old_xml = "<domain/>";
    j.old_was_running = true;
    for (const char* name : {"root.qcow2", "vmlinuz"}) {
        fs::path target = dir.path / name;
        write(target, "old");
        write(target.string() + ".vmshadow-restore", "new");
        j.files.push_back({target.string(), target.string() + ".vmshadow-restore",
                           target.string() + ".vmshadow-old", true});
    }
    ASSERT_TRUE(j.save());
    auto loaded = RestoreJournal::load(j.path);
    ASSERT_TRUE(loaded && *loaded);
    EXPECT_EQ((*loaded)->files.size(), 2u);
    EXPECT_EQ((*loaded)->old_xml, j.old_xml);
    EXPECT_TRUE((*loaded)->old_was_running);
    EXPECT_EQ((*loaded)->phase, "prepared");

    ASSERT_TRUE(j.link_aside());
    ASSERT_TRUE(j.link_aside()) << "again: nothing to do";
    ASSERT_TRUE(j.swap());
    ASSERT_TRUE(j.swap()) << "again: nothing to do";
    for (const auto& f : j.files) {
        EXPECT_EQ(read(f.target), "new");
        EXPECT_EQ(read(f.aside), "old") << "the old file is kept aside until the end";
    }
    j.remove_leftovers();
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir.path)) left.push_back(e.path().filename());
    std::sort(left.begin(), left.end());
    EXPECT_EQ(left, (std::vector<std::string>{"root.qcow2", "vmlinuz"}));
    auto gone = RestoreJournal::load(j.path);
    ASSERT_TRUE(gone);
    EXPECT_FALSE(*gone) << "the journal is gone";
}

// A journal damaged so that a field has the wrong type is a corruption error naming the file,
// not a json exception thrown out of the engine (no exceptions cross layers).
TEST(RestoreJournal, FieldOfTheWrongTypeIsCorruptionNotAnException) {
    TempDir dir;
    fs::path path = RestoreJournal::path_for(dir.path, "web1");
    for (const char* text : {R"({"version": "1"})", R"({"version": 1, "vm": 7})",
                             R"({"version": 1, "files": [{"target": 3}]})", "[1,2]"}) {
        write(path, text);
        Result<std::optional<RestoreJournal>> loaded = fail(ErrorKind::internal, "not run");
        EXPECT_NO_THROW(loaded = RestoreJournal::load(path)) << text;
        ASSERT_FALSE(loaded) << text;
        EXPECT_EQ(loaded.error().kind(), ErrorKind::corruption) << text;
        EXPECT_NE(loaded.error().message().find(path.string()), std::string::npos) << text;
    }
}

}  // namespace
}  // namespace vmshadow::engine
