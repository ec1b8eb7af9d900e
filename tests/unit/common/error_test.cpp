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
