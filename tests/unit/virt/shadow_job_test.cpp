// SPDX-License-Identifier: MIT
// How a shadow's job is recognised by its socket (virt/shadow_job.h): a backup refused
// because of a shadow names it, and no other socket is mistaken for one.
#include "virt/shadow_job.h"

#include <gtest/gtest.h>

namespace vmshadow::virt {
namespace {

TEST(ShadowSocket, TheSocketFolderNamesTheShadow) {
    auto dir = shadow_socket_dir("/var/lib/vmshadow/shadows", "3fa91c0e");
    EXPECT_EQ(dir, std::filesystem::path("/var/lib/vmshadow/shadows/vmshadow-shadow-3fa91c0e"));
    EXPECT_EQ(shadow_id_of_socket(dir / "nbd.sock"), std::optional<std::string>("3fa91c0e"));
}

TEST(ShadowSocket, OtherSocketsAreNoShadows) {
    EXPECT_FALSE(shadow_id_of_socket("/run/vmshadow/backup/uuid.1234abcd/nbd.sock"));
    EXPECT_FALSE(shadow_id_of_socket("/tmp/vmshadow-shadow-3fa91c0e/other.sock"));
    EXPECT_FALSE(shadow_id_of_socket("/tmp/vmshadow-shadow-/nbd.sock"));
    EXPECT_FALSE(shadow_id_of_socket(""));
}

TEST(ShadowSocket, ScratchFilesThatDoNotExistTakeNoSpace) {
    EXPECT_EQ(scratch_allocated({"/nonexistent/vmshadow-shadow-x-vda.qcow2"}), 0u);
}

}  // namespace
}  // namespace vmshadow::virt
