// SPDX-License-Identifier: MIT
// The pure parts every checkpoint operation shares: which disks a checkpoint holds, overlay
// names, the rules for a new name, and a domain XML moved onto overlays.
#include "engine/checkpoint_session.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

const char* kDomain = R"(<domain type='kvm'>
  <name>web1</name>
  <uuid>6f1c0e0e-0000-4000-8000-000000000001</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/img/web1.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/web1-data.now-0123abcd.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/img/web1-data.qcow2'/></backingStore>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/x.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'><source network='nowhere'/></interface>
  </devices>
</domain>)";

TEST(CheckpointSession, CheckpointableDisksAreTheBackedUpFiles) {
    auto disks = checkpointable_disks(kDomain, "web1");
    ASSERT_TRUE(disks) << disks.error().message();
    ASSERT_EQ(disks->size(), 2u);
    EXPECT_EQ((*disks)[0].target, "vda");
    EXPECT_EQ((*disks)[0].image, "/img/web1.raw");
    EXPECT_EQ((*disks)[1].image, "/img/web1-data.now-0123abcd.qcow2");
}

TEST(CheckpointSession, NetworkDiskIsUnsupportedNamingIt) {
    const char* xml = R"(<domain><name>n</name><devices>
      <disk type='network' device='disk'><driver type='raw'/>
        <source protocol='nbd' name='x'><host name='h'/></source><target dev='vdc'/></disk>
      </devices></domain>)";
    auto disks = checkpointable_disks(xml, "n");
    ASSERT_FALSE(disks);
    EXPECT_EQ(disks.error().kind(), ErrorKind::unsupported);
    EXPECT_NE(disks.error().message().find("vdc"), std::string::npos) << disks.error().message();
}

TEST(CheckpointSession, OverlayNamesKeepTheDiskStemAndAreFresh) {
    std::string dir = (fs::temp_directory_path() / "ckpt-session-XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir.data()), nullptr);
    std::string first = new_overlay_path(dir + "/web1.qcow2");
    EXPECT_EQ(fs::path(first).parent_path(), fs::path(dir));
    EXPECT_TRUE(fs::path(first).filename().string().starts_with("web1.now-")) << first;
    EXPECT_TRUE(first.ends_with(".qcow2"));
    std::string second = new_overlay_path(first);
    EXPECT_TRUE(fs::path(second).filename().string().starts_with("web1.now-")) << second;
    EXPECT_EQ(fs::path(second).filename().string().size(),
              std::string("web1.now-01234567.qcow2").size())
        << "no growing chain of suffixes";
    EXPECT_NE(first, second);
    fs::remove_all(dir);
}

TEST(CheckpointSession, NewNamesFollowTheRecordsRules) {
    CheckpointTree t;
    t.vm_name = "web1";
    Checkpoint c;
    c.id = "0000abcd";
    c.name = "before upgrade";
    t.checkpoints.push_back(c);
    EXPECT_TRUE(check_new_checkpoint_name(t, "after upgrade"));
    EXPECT_EQ(check_new_checkpoint_name(t, "before upgrade").error().kind(), ErrorKind::conflict);
    EXPECT_EQ(check_new_checkpoint_name(t, "0000abcd").error().kind(), ErrorKind::conflict);
    EXPECT_EQ(check_new_checkpoint_name(t, "").error().kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(check_new_checkpoint_name(t, std::string(101, 'x')).error().kind(),
              ErrorKind::invalid_argument);
    EXPECT_EQ(check_new_checkpoint_name(t, "a\tb").error().kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(check_new_checkpoint_name(t, "caf\xc3").error().kind(), ErrorKind::invalid_argument)
        << "not UTF-8";
    EXPECT_TRUE(check_new_checkpoint_name(t, "café ☕"));
}

TEST(CheckpointSession, DomainXmlOnOverlaysDropsTheChainAndKeepsTheRest) {
    auto xml = domain_xml_on_images(kDomain, {{"vda", "/img/web1.now-aaaaaaaa.qcow2"},
                                              {"vdb", "/img/web1-data.now-bbbbbbbb.qcow2"}});
    ASSERT_TRUE(xml) << xml.error().message();
    EXPECT_NE(xml->find("/img/web1.now-aaaaaaaa.qcow2"), std::string::npos) << *xml;
    EXPECT_NE(xml->find("/img/web1-data.now-bbbbbbbb.qcow2"), std::string::npos) << *xml;
    EXPECT_EQ(xml->find("backingStore"), std::string::npos) << *xml;
    EXPECT_EQ(xml->find("type=\"raw\""), std::string::npos) << "vda is a qcow2 overlay now";
    EXPECT_NE(xml->find("/iso/x.iso"), std::string::npos) << "the CD-ROM is untouched";
    EXPECT_NE(xml->find("network=\"nowhere\""), std::string::npos) << "the NIC is untouched";
    EXPECT_NE(xml->find("6f1c0e0e-0000-4000-8000-000000000001"), std::string::npos)
        << "the same VM";
}

}  // namespace
}  // namespace vmshadow::engine
