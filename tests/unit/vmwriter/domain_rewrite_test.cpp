// SPDX-License-Identifier: MIT
#include "vmwriter/domain_rewrite.h"

#include <gtest/gtest.h>

namespace vmshadow::vmwriter {
namespace {

constexpr const char* kXml = R"(<domain type='qemu'>
  <name>web1</name>
  <uuid>0b6f3e8e-2f6a-4a51-9c49-6f2a8e1c7d10</uuid>
  <os><type>hvm</type><kernel>/vms/web1/vmlinuz</kernel><nvram>/nv/web1_VARS.fd</nvram></os>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg/web1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:11:22:33'/>
      <source network='gone'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:11:22:34'/>
      <source network='default'/>
    </interface>
    <serial type='file'><source path='/vms/web1/serial.log'/><target port='0'/></serial>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/web1.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>)";

DomainRewriteSpec spec() {
    DomainRewriteSpec s;
    s.disks["vda"] = {"/restore/web1-vda.qcow2", "qcow2"};
    s.boot_files["kernel"] = "/restore/vmlinuz";
    s.boot_files["nvram"] = "/restore/web1_VARS.fd";
    s.network_exists = [](const std::string& n) { return n == "default"; };
    s.bridge_exists = [](const std::string&) { return false; };
    return s;
}

TEST(DomainRewrite, DisksPointAtTheRestoredFilesAndOtherDevicesStay) {
    auto r = rewrite_domain_xml(kXml, spec());
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_NE(r->xml.find("<source file=\"/restore/web1-vda.qcow2\""), std::string::npos) << r->xml;
    EXPECT_NE(r->xml.find("type=\"qcow2\""), std::string::npos);
    EXPECT_EQ(r->xml.find("/dev/vg/web1"), std::string::npos);
    EXPECT_EQ(r->xml.find("backingStore"), std::string::npos);
    EXPECT_NE(r->xml.find("/iso/install.iso"), std::string::npos) << "the CD-ROM is kept";
    EXPECT_NE(r->xml.find("<kernel>/restore/vmlinuz</kernel>"), std::string::npos);
    EXPECT_NE(r->xml.find("<nvram>/restore/web1_VARS.fd</nvram>"), std::string::npos);
    EXPECT_NE(r->xml.find("0b6f3e8e"), std::string::npos) << "in place keeps the identity";
}

TEST(DomainRewrite, NicOfAMissingNetworkIsKeptWithItsLinkDownAndNamed) {
    auto r = rewrite_domain_xml(kXml, spec());
    ASSERT_TRUE(r);
    EXPECT_NE(r->xml.find("<interface type=\"ethernet\">"), std::string::npos) << r->xml;
    EXPECT_NE(r->xml.find("<link state=\"down\""), std::string::npos);
    EXPECT_EQ(r->xml.find("network=\"gone\""), std::string::npos);
    EXPECT_NE(r->xml.find("network=\"default\""), std::string::npos);
    EXPECT_NE(r->xml.find("52:54:00:11:22:33"), std::string::npos) << "its MAC stays in place";
    ASSERT_EQ(r->notes.size(), 1u);
    EXPECT_NE(r->notes[0].find("'gone'"), std::string::npos);
}

TEST(DomainRewrite, AsGivesANewNameNoUuidNoMacsAndMovesLogsAndSockets) {
    auto s = spec();
    s.new_name = "web1-copy";
    s.log_dir = "/restore";
    auto r = rewrite_domain_xml(kXml, s);
    ASSERT_TRUE(r);
    EXPECT_NE(r->xml.find("<name>web1-copy</name>"), std::string::npos);
    EXPECT_EQ(r->xml.find("<uuid>"), std::string::npos);
    EXPECT_EQ(r->xml.find("<mac "), std::string::npos);
    EXPECT_NE(r->xml.find("/restore/serial.log"), std::string::npos) << r->xml;
    EXPECT_EQ(r->xml.find("web1.agent"), std::string::npos);
}

TEST(DomainRewrite, BrokenXmlIsCorruption) {
    auto r = rewrite_domain_xml("<domain", spec());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::corruption);
}

}  // namespace
}  // namespace vmshadow::vmwriter
