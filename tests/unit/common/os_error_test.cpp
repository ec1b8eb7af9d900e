// SPDX-License-Identifier: MIT
#include "common/os_error.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace vmshadow {
namespace {

TEST(OsError, EachErrnoHasOneKind) {
    EXPECT_EQ(errno_kind(ENOENT), ErrorKind::not_found);
    EXPECT_EQ(errno_kind(EACCES), ErrorKind::permission);
    EXPECT_EQ(errno_kind(EPERM), ErrorKind::permission);
    EXPECT_EQ(errno_kind(ENOSPC), ErrorKind::io);
    EXPECT_EQ(errno_kind(EDQUOT), ErrorKind::io);
    EXPECT_EQ(errno_kind(EIO), ErrorKind::io);
    EXPECT_EQ(errno_kind(EROFS), ErrorKind::io);
    EXPECT_EQ(errno_kind(EFBIG), ErrorKind::io);
    EXPECT_EQ(errno_kind(EEXIST), ErrorKind::conflict);
    EXPECT_EQ(errno_kind(ENOTEMPTY), ErrorKind::conflict);
    EXPECT_EQ(errno_kind(EBUSY), ErrorKind::conflict);
    EXPECT_EQ(errno_kind(ETIMEDOUT), ErrorKind::timeout);
    EXPECT_EQ(errno_kind(EINTR), ErrorKind::cancelled);
    EXPECT_EQ(errno_kind(ENOTDIR), ErrorKind::invalid_argument);
    EXPECT_EQ(errno_kind(EISDIR), ErrorKind::invalid_argument);
    EXPECT_EQ(errno_kind(ELOOP), ErrorKind::invalid_argument);
    EXPECT_EQ(errno_kind(ENAMETOOLONG), ErrorKind::invalid_argument);
    EXPECT_EQ(errno_kind(EXDEV), ErrorKind::unsupported);
    EXPECT_EQ(errno_kind(EOPNOTSUPP), ErrorKind::unsupported);
    EXPECT_EQ(errno_kind(ECONNREFUSED), ErrorKind::unavailable);
    EXPECT_EQ(errno_kind(EPIPE), ErrorKind::unavailable);
    EXPECT_EQ(errno_kind(EAGAIN), ErrorKind::io);
    EXPECT_EQ(errno_kind(0x7fff), ErrorKind::io);  // unknown: the host failed
}

TEST(OsError, MessageNamesWhatAndTheSystemReason) {
    Error e = os_error("rename /a to /b", ENOSPC);
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_EQ(e.message(), std::string("rename /a to /b: ") + std::strerror(ENOSPC));
}

TEST(OsError, FilesystemErrorCodeMapsLikeErrno) {
    std::error_code ec;
    (void)std::filesystem::file_size("/nonexistent/vmshadow-os-error-test", ec);
    ASSERT_TRUE(ec);
    EXPECT_EQ(os_error("size", ec).kind(), ErrorKind::not_found);
    EXPECT_EQ(os_error("x", std::make_error_code(std::errc::permission_denied)).kind(),
              ErrorKind::permission);
    // Another category (not an errno): io, message kept.
    Error other = os_error("parse", std::make_error_code(std::io_errc::stream));
    EXPECT_EQ(other.kind(), ErrorKind::io);
    EXPECT_EQ(other.message().rfind("parse: ", 0), 0u);
}

}  // namespace
}  // namespace vmshadow
