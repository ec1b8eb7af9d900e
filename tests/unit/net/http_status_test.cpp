// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include "net/http.h"

namespace vmshadow::net {
namespace {

TEST(HttpStatusMap, AnErrorKeepsItsKindAcrossTheWire) {
    for (ErrorKind kind : {ErrorKind::invalid_argument, ErrorKind::not_found, ErrorKind::conflict,
                           ErrorKind::permission, ErrorKind::unsupported, ErrorKind::unavailable,
                           ErrorKind::timeout, ErrorKind::internal})
        EXPECT_EQ(error_kind_for_status(http_status_for(kind)), kind) << http_status_for(kind);
}

TEST(HttpStatusMap, LockedAndCancelledAnswerConflictAndUnknownStatusesAreInternal) {
    EXPECT_EQ(http_status_for(ErrorKind::locked), 409);
    EXPECT_EQ(http_status_for(ErrorKind::cancelled), 409);
    EXPECT_EQ(error_kind_for_status(418), ErrorKind::internal);
    EXPECT_EQ(error_kind_for_status(413), ErrorKind::invalid_argument);
    EXPECT_EQ(error_kind_for_status(401), ErrorKind::permission);
}

}  // namespace
}  // namespace vmshadow::net
