// SPDX-License-Identifier: MIT
#include "common/atomic_file.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace vmshadow {
namespace {
namespace fs = std::filesystem;

// A directory of its own, removed even when the test fails.
class AtomicFileTest : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "vmshadow-atomic-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    static std::string read(const fs::path& p) {
        std::ifstream in(p);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }
    // Every entry of the directory but `keep`: the temp files a failure must not leave.
    std::vector<std::string> others(const std::string& keep) const {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(dir_))
            if (e.path().filename() != keep) names.push_back(e.path().filename().string());
        return names;
    }

    fs::path dir_;
};

// Makes write() fail with EFBIG past `bytes`, as a full disk would with ENOSPC.
class FileSizeLimit {
  public:
    explicit FileSizeLimit(rlim_t bytes) {
        ::getrlimit(RLIMIT_FSIZE, &old_);
        old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
        rlimit limit = old_;
        limit.rlim_cur = bytes;
        ::setrlimit(RLIMIT_FSIZE, &limit);
    }
    ~FileSizeLimit() {
        ::setrlimit(RLIMIT_FSIZE, &old_);
        std::signal(SIGXFSZ, old_handler_);
    }

  private:
    rlimit old_{};
    void (*old_handler_)(int) = nullptr;
};

TEST_F(AtomicFileTest, ReplacesContentAndLeavesNoTemp) {
    fs::path target = dir_ / "record.json";
    ASSERT_TRUE(write_file_atomically(target, "old\n"));
    ASSERT_TRUE(write_file_atomically(target, "new\n"));
    EXPECT_EQ(read(target), "new\n");
    EXPECT_TRUE(others("record.json").empty());
}

TEST_F(AtomicFileTest, FailedWriteLeavesOldFileIntactAndNoTemp) {
    fs::path target = dir_ / "state.json";
    ASSERT_TRUE(write_file_atomically(target, "old\n"));
    Status st;
    {
        FileSizeLimit limit(4096);
        st = write_file_atomically(target, std::string(64 * 1024, 'x'));
    }
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::io);
    EXPECT_NE(st.error().message().find("write"), std::string::npos) << st.error().message();
    EXPECT_EQ(read(target), "old\n");
    EXPECT_TRUE(others("state.json").empty());
}

TEST_F(AtomicFileTest, FailedRenameLeavesOldTargetAndNoTemp) {
    // A non-empty directory where the record should go: rename() refuses to replace it.
    fs::path target = dir_ / "journal";
    fs::create_directories(target / "inside");
    Status st = write_file_atomically(target, "new\n");
    ASSERT_FALSE(st);
    EXPECT_TRUE(fs::is_directory(target / "inside"));
    EXPECT_TRUE(others("journal").empty());
}

TEST_F(AtomicFileTest, UncommittedFileIsDiscardedAndTargetKept) {
    fs::path target = dir_ / "job.json";
    ASSERT_TRUE(write_file_atomically(target, "old\n"));
    {
        auto file = AtomicFile::create(target);
        ASSERT_TRUE(file);
        ASSERT_TRUE(file->write("half of a new rec"));
        EXPECT_EQ(others("job.json").size(), 1u);  // the temp, beside the target
    }
    EXPECT_EQ(read(target), "old\n");
    EXPECT_TRUE(others("job.json").empty());
}

TEST_F(AtomicFileTest, MovedFromFileDoesNotDiscardTheMovedTemp) {
    fs::path target = dir_ / "instant.json";
    auto file = AtomicFile::create(target, 0600);
    ASSERT_TRUE(file);
    AtomicFile moved = std::move(*file);
    ASSERT_TRUE(moved.write("{}\n"));
    ASSERT_TRUE(moved.commit());
    EXPECT_EQ(read(target), "{}\n");
    struct stat st {};
    ASSERT_EQ(::stat(target.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_FALSE(moved.commit());  // committed once: a second commit is a bug, not a rewrite
}

TEST_F(AtomicFileTest, CreatesMissingParentDirectories) {
    fs::path target = dir_ / "a" / "b" / "writer-state.json";
    ASSERT_TRUE(write_file_atomically(target, "x"));
    EXPECT_EQ(read(target), "x");
}

TEST_F(AtomicFileTest, ParentThatIsAFileIsInvalidArgument) {
    ASSERT_TRUE(write_file_atomically(dir_ / "plain", "x"));
    Status st = write_file_atomically(dir_ / "plain" / "record.json", "y");
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind(), ErrorKind::invalid_argument) << st.error().message();
    EXPECT_EQ(read(dir_ / "plain"), "x");
}

}  // namespace
}  // namespace vmshadow
