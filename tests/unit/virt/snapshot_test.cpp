// SPDX-License-Identifier: MIT
// The external-snapshot XML a checkpoint hands libvirt: listed disks onto qcow2 overlays,
// every other disk untouched, memory saved to the file only for a standard checkpoint.
#include "virt/snapshot.h"

#include <gtest/gtest.h>

namespace vmshadow::virt {
namespace {

TEST(SnapshotXml, DiskOnlyPutsListedDisksOnOverlaysAndLeavesTheRest) {
    std::string xml = external_snapshot_xml({{"vda", "/img/web1.now-0000abcd.qcow2"}},
                                            {"vda", "sda"}, std::nullopt);
    EXPECT_NE(xml.find("<memory snapshot=\"no\""), std::string::npos) << xml;
    EXPECT_NE(xml.find("<disk name=\"vda\" snapshot=\"external\">"), std::string::npos) << xml;
    EXPECT_NE(xml.find("<source file=\"/img/web1.now-0000abcd.qcow2\""), std::string::npos) << xml;
    EXPECT_NE(xml.find("<driver type=\"qcow2\""), std::string::npos) << xml;
    EXPECT_NE(xml.find("<disk name=\"sda\" snapshot=\"no\""), std::string::npos) << xml;
}

TEST(SnapshotXml, WithMemorySavesItExternally) {
    std::string xml = external_snapshot_xml({{"vda", "/img/o.qcow2"}, {"vdb", "/img/p.qcow2"}},
                                            {"vda", "vdb"}, std::filesystem::path("/ck/1.mem"));
    EXPECT_NE(xml.find("<memory snapshot=\"external\" file=\"/ck/1.mem\""), std::string::npos)
        << xml;
    EXPECT_NE(xml.find("<source file=\"/img/p.qcow2\""), std::string::npos) << xml;
    EXPECT_EQ(xml.find("snapshot=\"no\""), std::string::npos) << xml;
}

}  // namespace
}  // namespace vmshadow::virt
