// SPDX-License-Identifier: MIT
#include "common/error.h"

#include <gtest/gtest.h>

namespace vmshadow {
namespace {

Result<int> fails_not_found() {
    return fail(ErrorKind::not_found, "disk vdb not found");
}

TEST(Error, ContextIsPrependedAndKindKept) {
    auto r = with_context(fails_not_found(), "vm 'web1'");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::not_found);
    EXPECT_EQ(r.error().message(), "vm 'web1': disk vdb not found");
}

TEST(Error, ContextAlreadyInTheMessageIsNotRepeated) {
    Error e(ErrorKind::io, "disk vdb: no space left on device");
    EXPECT_EQ(e.with_context("vm 'a', disk vdb").message(),
              "vm 'a', disk vdb: no space left on device");
    EXPECT_EQ(e.with_context("disk vdb").message(), "disk vdb: no space left on device");
    EXPECT_EQ(e.with_context("vm 'a'").message(), "vm 'a': disk vdb: no space left on device");
    Error other(ErrorKind::io, "disk vdbx: full");
    EXPECT_EQ(other.with_context("vm 'a', disk vdb").message(),
              "vm 'a', disk vdb: disk vdbx: full");
}

TEST(Error, SuccessPassesThroughWithContext) {
    Result<int> ok = 7;
    auto r = with_context(ok, "ignored");
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 7);
}

TEST(Error, KindNamesAreStableSnakeCase) {
    EXPECT_EQ(kind_name(ErrorKind::not_found), "not_found");
    EXPECT_EQ(kind_name(ErrorKind::invalid_argument), "invalid_argument");
}

}  // namespace
}  // namespace vmshadow
