// SPDX-License-Identifier: MIT
// Checkpoint naming (which checkpoints are vmshadow's, and whose) and checkpoint XML parsing.
#include "virt/checkpoints.h"

#include <gtest/gtest.h>

namespace vmshadow::virt {
namespace {

using namespace std::chrono;

TEST(CheckpointName, CarriesRepositoryAndUtcTimeToTheMillisecond) {
    sys_time<milliseconds> at = sys_days{2026y / 11 / 22} + 1h + 2min + 3s + 45ms;
    auto name = make_checkpoint_name("3fa2b1c9deadbeef", at);
    ASSERT_TRUE(name) << name.error().message();
    EXPECT_EQ(*name, "vmshadow-3fa2b1c9-20261122T010203.045Z");
    EXPECT_EQ(checkpoint_repo(*name), "3fa2b1c9");
    EXPECT_TRUE(checkpoint_belongs_to(*name, "3fa2b1c9deadbeef"));
    EXPECT_FALSE(checkpoint_belongs_to(*name, "3fa2b1c8deadbeef"));
}

TEST(CheckpointName, RejectsRepositoryIdsThatAreNotHex) {
    EXPECT_FALSE(make_checkpoint_name("short", system_clock::now()));
    EXPECT_FALSE(make_checkpoint_name("XYZ2b1c9deadbeef", system_clock::now()));
}

TEST(CheckpointName, ForeignNamesAreNotOurs) {
    for (const char* name : {"othertool.1", "vmshadow-", "vmshadow-3fa2b1c9-2026",
                             "vmshadow-3FA2B1C9-20261122T010203.045Z",
                             "vmshadow-3fa2b1c9-20261122T010203.045Zx", "virtnbdbackup.0"}) {
        EXPECT_FALSE(checkpoint_repo(name)) << name;
    }
}

TEST(CheckpointXml, ParsesParentDisksAndOwner) {
    auto info = parse_checkpoint_xml(R"(<domaincheckpoint>
  <name>vmshadow-3fa2b1c9-20261122T010203.045Z</name>
  <parent><name>vmshadow-3fa2b1c9-20261121T010203.045Z</name></parent>
  <creationTime>1795310625</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='vmshadow-3fa2b1c9-20261122T010203.045Z'/>
    <disk name='vdb' checkpoint='no'/>
  </disks>
</domaincheckpoint>)");
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->parent, "vmshadow-3fa2b1c9-20261121T010203.045Z");
    EXPECT_EQ(info->creation_time, 1795310625);
    ASSERT_EQ(info->disks.size(), 2u);
    EXPECT_EQ(info->disks[0].bitmap, info->name);
    EXPECT_TRUE(info->disks[1].bitmap.empty());
    EXPECT_TRUE(info->ours());
    EXPECT_EQ(info->repo, "3fa2b1c9");
}

}  // namespace
}  // namespace vmshadow::virt
