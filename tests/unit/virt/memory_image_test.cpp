// SPDX-License-Identifier: MIT
#include "virt/memory_image.h"

#include <gtest/gtest.h>

namespace vmshadow::virt {
namespace {

TEST(MemoryImage, SnapshotXmlSavesMemoryExternallyAndNoDisk) {
    std::string xml = memory_snapshot_xml("/var/tmp/m.save", {"vda", "sda"});
    EXPECT_NE(xml.find("<memory snapshot=\"external\" file=\"/var/tmp/m.save\""), std::string::npos)
        << xml;
    EXPECT_NE(xml.find("<disk name=\"vda\" snapshot=\"no\""), std::string::npos) << xml;
    EXPECT_NE(xml.find("<disk name=\"sda\" snapshot=\"no\""), std::string::npos) << xml;
}

}  // namespace
}  // namespace vmshadow::virt
