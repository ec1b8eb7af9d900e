// SPDX-License-Identifier: MIT
#include "cli/exit_code.h"

#include <gtest/gtest.h>

#include <set>

namespace vmshadow::cli {
namespace {

constexpr ErrorKind kAllKinds[] = {
    ErrorKind::internal, ErrorKind::invalid_argument, ErrorKind::not_found,  ErrorKind::unavailable,
    ErrorKind::timeout,  ErrorKind::conflict,         ErrorKind::locked,     ErrorKind::corruption,
    ErrorKind::io,       ErrorKind::unsupported,      ErrorKind::permission, ErrorKind::cancelled,
};

TEST(ExitCode, EveryErrorKindHasItsOwnNonZeroCode) {
    std::set<int> codes;
    for (auto kind : kAllKinds) {
        int code = exit_code_for(kind);
        EXPECT_NE(code, 0) << kind_name(kind);
        codes.insert(code);
    }
    EXPECT_EQ(codes.size(), std::size(kAllKinds));
}

TEST(ExitCode, HelpTableListsEveryCode) {
    std::string table = exit_code_table();
    for (auto kind : kAllKinds) {
        std::string code = std::to_string(exit_code_for(kind));
        EXPECT_NE(table.find(" " + code + "  "), std::string::npos) << "code " << code;
    }
}

TEST(ExitCode, DocumentedValuesNeverChange) {
    // Scripts depend on these; README.md lists them.
    EXPECT_EQ(exit_code_for(ErrorKind::invalid_argument), 2);
    EXPECT_EQ(exit_code_for(ErrorKind::not_found), 3);
    EXPECT_EQ(exit_code_for(ErrorKind::unavailable), 4);
    EXPECT_EQ(exit_code_for(ErrorKind::timeout), 5);
    EXPECT_EQ(exit_code_for(ErrorKind::corruption), 8);
    EXPECT_EQ(exit_code_for(ErrorKind::cancelled), 12);
}

}  // namespace
}  // namespace vmshadow::cli
