// SPDX-License-Identifier: MIT
#include "vmwriter/backup_plan.h"

#include <gtest/gtest.h>

namespace vmshadow::vmwriter {
namespace {

TEST(BackupPlan, RoundTripsThroughJson) {
    VmBackupPlan p;
    p.method = BackupMethod::image;
    p.reasons = {"asked for"};
    p.disks = {{"vda", "/v/a.qcow2", "qcow2", 1 << 20, true, ""},
               {"vdb", "/v/b.raw", "raw", 2 << 20, false, "raw image"}};
    p.skipped = {{"sda", "CD-ROM"}};
    p.incremental_from = "vmshadow-0123abcd-20261122T010203.004Z";
    p.new_checkpoint = "vmshadow-0123abcd-20261122T020203.004Z";
    p.chain_notes = {"vdb: raw"};
    p.memory_file = "/var/tmp/m.save";
    auto back = parse_plan(plan_to_json(p).dump());
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(plan_to_json(*back), plan_to_json(p));
    EXPECT_EQ(back->disk("vdb")->full_reason, "raw image");
    EXPECT_TRUE(back->live());
}

TEST(BackupPlan, DamagedJsonIsACorruptionError) {
    auto bad = parse_plan(R"({"method": "application"})");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().kind(), ErrorKind::corruption);
}

}  // namespace
}  // namespace vmshadow::vmwriter
