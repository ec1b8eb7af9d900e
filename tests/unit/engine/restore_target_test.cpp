// SPDX-License-Identifier: MIT
// restore_target.h: what each kind of path is taken for, the refusals' wording, the re-check
// before a rename, and a temp file never created through a link.
#include "engine/restore_target.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

class RestoreTargetUnit : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string pattern = (fs::temp_directory_path() / "vmshadow-target-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir = pattern;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    std::string file(const std::string& name, const std::string& text) {
        std::ofstream(dir / name) << text;
        return (dir / name).string();
    }
    TargetKind kind(const fs::path& p) {
        auto t = inspect_restore_target(p.string());
        EXPECT_TRUE(t) << p;
        return t ? t->kind : TargetKind::other;
    }
    fs::path dir;
};

TEST_F(RestoreTargetUnit, EachKindOfPathIsSeenForWhatItIs) {
    EXPECT_EQ(kind(dir / "nothing"), TargetKind::absent);
    EXPECT_EQ(kind(file("f", "x")), TargetKind::regular);
    EXPECT_EQ(kind(dir), TargetKind::directory);
    ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
    EXPECT_EQ(kind(dir / "fifo"), TargetKind::fifo);
    ASSERT_EQ(::mknod((dir / "null").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
    EXPECT_EQ(kind(dir / "null"), TargetKind::char_device);
    fs::create_symlink(dir / "f", dir / "to-file");
    EXPECT_EQ(kind(dir / "to-file"), TargetKind::symlink);
    fs::create_symlink(dir / "nowhere", dir / "dangling");
    EXPECT_EQ(kind(dir / "dangling"), TargetKind::symlink);
    // A block device node of our own (loop0's numbers; never opened for writing here).
    ASSERT_EQ(::mknod((dir / "blk").c_str(), S_IFBLK | 0600, makedev(7, 0)), 0);
    EXPECT_EQ(kind(dir / "blk"), TargetKind::block_device);
    fs::create_symlink(dir / "blk", dir / "lv");
    auto lv = inspect_restore_target((dir / "lv").string());
    ASSERT_TRUE(lv);
    EXPECT_EQ(lv->kind, TargetKind::block_device) << "a link to a device is followed";
    EXPECT_EQ(lv->device, (dir / "blk").string());
}

TEST_F(RestoreTargetUnit, RefusalsNameThePathAndWhatItIs) {
    ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
    auto fifo = inspect_restore_target((dir / "fifo").string());
    ASSERT_TRUE(fifo);
    auto st = refuse_unwritable(*fifo, true);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::invalid_argument);
    EXPECT_NE(st.error().message().find((dir / "fifo").string() + " is a FIFO"), std::string::npos)
        << st.error().message();
    fs::create_symlink(dir / "nowhere", dir / "dangling");
    auto dangling = inspect_restore_target((dir / "dangling").string());
    ASSERT_TRUE(dangling);
    st = refuse_unwritable(*dangling, true);
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().message().find("symbolic link"), std::string::npos);
    ASSERT_EQ(::mknod((dir / "blk").c_str(), S_IFBLK | 0600, makedev(7, 0)), 0);
    auto blk = inspect_restore_target((dir / "blk").string());
    ASSERT_TRUE(blk);
    EXPECT_TRUE(refuse_unwritable(*blk, true));
    EXPECT_FALSE(refuse_unwritable(*blk, false));
    auto regular = inspect_restore_target(file("f", "x"));
    ASSERT_TRUE(regular);
    EXPECT_TRUE(refuse_unwritable(*regular, false));
}

TEST_F(RestoreTargetUnit, TheRenameRecheckRefusesWhatAppearedMeanwhile) {
    const fs::path out = dir / "out";
    EXPECT_TRUE(recheck_before_rename(out.string(), false));
    file("out", "someone's");
    EXPECT_EQ(recheck_before_rename(out.string(), false).error().kind(), ErrorKind::conflict);
    EXPECT_TRUE(recheck_before_rename(out.string(), true));
    fs::remove(out);
    fs::create_symlink(dir / "elsewhere", out);
    EXPECT_EQ(recheck_before_rename(out.string(), true).error().kind(),
              ErrorKind::invalid_argument);
    fs::remove(out);
    ASSERT_EQ(::mkfifo(out.c_str(), 0600), 0);
    EXPECT_EQ(recheck_before_rename(out.string(), true).error().kind(),
              ErrorKind::invalid_argument);
}

TEST_F(RestoreTargetUnit, ATempFileIsNeverCreatedThroughALink) {
    const std::string victim = file("victim", "keep me");
    const fs::path temp = dir / "out.vmshadow-partial";
    fs::create_symlink(victim, temp);
    auto fd = create_new_file(temp.string());
    ASSERT_TRUE(fd) << fd.error().message();
    ASSERT_EQ(::write(fd->get(), "new", 3), 3);
    EXPECT_FALSE(fs::is_symlink(temp));
    std::ifstream in(victim);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text, "keep me");
    fs::remove(temp);
    fs::create_directories(temp / "sub");
    auto refused = create_new_file(temp.string());
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::invalid_argument);
    EXPECT_TRUE(fs::is_directory(temp / "sub"));
}

}  // namespace
}  // namespace vmshadow::engine
