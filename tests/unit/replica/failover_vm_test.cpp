// SPDX-License-Identifier: MIT
// The domain XML of a VM started from a replica point (failover_vm.h): pure rewrites.
#include "replica/failover_vm.h"

#include <gtest/gtest.h>

#include <pugixml.hpp>

namespace vmshadow::replica {
namespace {

constexpr const char* kStored = R"(<domain type='kvm' id='7'>
  <name>web1</name>
  <uuid>6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab</uuid>
  <memory unit='MiB'>512</memory>
  <os><type arch='x86_64'>hvm</type><loader type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
      <nvram>/var/lib/libvirt/qemu/nvram/web1_VARS.fd</nvram></os>
  <devices>
    <disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>
      <source dev='/dev/vg/web1'/><backingStore/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/srv/web1-scratch.qcow2'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='/srv/install.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
    <interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/>
      <model type='virtio'/></interface>
    <interface type='bridge'><mac address='52:54:00:12:34:57'/><source bridge='br0'/>
      <link state='up'/></interface>
    <hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0'/></source></hostdev>
    <filesystem type='mount'><source dir='/etc'/><target dir='etc'/></filesystem>
    <serial type='file'><source path='/var/tmp/web1/serial.log'/><target port='0'/></serial>
    <channel type='unix'><source mode='bind' path='/run/web1/agent.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
    <qemu:arg value='-evil'/></qemu:commandline>
</domain>)";

pugi::xml_document parse(const std::string& xml) {
    pugi::xml_document doc;
    EXPECT_TRUE(doc.load_string(xml.c_str()));
    return doc;
}

TEST(FailoverVmXml, TestCopyGetsNewIdentityOverlaysAndNicsDown) {
    FailoverVmSpec spec{"web1-test",
                        "11111111-2222-4333-8444-555555555555",
                        {{"vda", "/r/web1-6f1c2d3e/test-vda.qcow2"}},
                        true};
    auto xml = failover_domain_xml(kStored, spec);
    ASSERT_TRUE(xml) << xml.error().message();
    auto doc = parse(*xml);
    auto domain = doc.child("domain");
    EXPECT_FALSE(domain.attribute("id"));
    EXPECT_STREQ(domain.child_value("name"), "web1-test");
    EXPECT_STREQ(domain.child_value("uuid"), "11111111-2222-4333-8444-555555555555");
    EXPECT_FALSE(domain.child("os").child("nvram"));
    auto devices = domain.child("devices");
    int disks = 0;
    for (auto disk : devices.children("disk")) {
        ++disks;
        std::string target = disk.child("target").attribute("dev").value();
        if (target == "vda") {
            EXPECT_STREQ(disk.attribute("type").value(), "file");
            EXPECT_STREQ(disk.child("driver").attribute("type").value(), "qcow2");
            EXPECT_STREQ(disk.child("source").attribute("file").value(),
                         "/r/web1-6f1c2d3e/test-vda.qcow2");
            EXPECT_FALSE(disk.child("source").attribute("dev"));
            EXPECT_FALSE(disk.child("backingStore"));
        } else {
            EXPECT_EQ(target, "sda") << "the unreplicated vdb is dropped";
            EXPECT_FALSE(disk.child("source")) << "the CD-ROM tray is empty";
        }
    }
    EXPECT_EQ(disks, 2);
    int nics = 0;
    for (auto nic : devices.children("interface")) {
        ++nics;
        EXPECT_FALSE(nic.child("mac"));
        EXPECT_STREQ(nic.child("link").attribute("state").value(), "down");
        EXPECT_FALSE(nic.child("link").next_sibling("link"));
    }
    EXPECT_EQ(nics, 2);
}

TEST(FailoverVmXml, FailoverKeepsIdentityAndNetwork) {
    FailoverVmSpec spec{"web1",
                        "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
                        {{"vda", "/r/live-vda.qcow2"}, {"vdb", "/r/live-vdb.qcow2"}},
                        false};
    auto xml = failover_domain_xml(kStored, spec);
    ASSERT_TRUE(xml) << xml.error().message();
    EXPECT_NE(xml->find("52:54:00:12:34:56"), std::string::npos);
    EXPECT_NE(xml->find("state=\"up\""), std::string::npos);
    EXPECT_NE(xml->find("/r/live-vdb.qcow2"), std::string::npos);
    EXPECT_EQ(xml->find("/srv/web1-scratch.qcow2"), std::string::npos);
}

TEST(FailoverVmXml, NothingReachesIntoTheHostBeyondDisksAndNics) {
    auto xml = failover_domain_xml(kStored, {"web1", "u", {{"vda", "/r/live-vda.qcow2"}}, false});
    ASSERT_TRUE(xml) << xml.error().message();
    for (const char* gone : {"hostdev", "<filesystem", "qemu:", "-evil", "/etc'", "/etc\"",
                             "serial.log", "agent.sock"})
        EXPECT_EQ(xml->find(gone), std::string::npos) << gone << " in " << *xml;
    auto doc = parse(*xml);
    auto devices = doc.child("domain").child("devices");
    EXPECT_STREQ(devices.child("serial").attribute("type").value(), "pty");
    EXPECT_STREQ(devices.child("channel").child("target").attribute("name").value(),
                 "org.qemu.guest_agent.0");
}

TEST(FailoverVmXml, AMissingDiskOrNoDomainIsRefused) {
    EXPECT_FALSE(failover_domain_xml(kStored, {"web1", "u", {{"vdc", "/r/x"}}, false}));
    EXPECT_FALSE(failover_domain_xml("<network/>", {"web1", "u", {}, false}));
    EXPECT_FALSE(failover_domain_xml("not xml <", {"web1", "u", {}, false}));
}

TEST(FailoverVmXml, RandomUuidsAreVersion4AndDiffer) {
    auto a = random_uuid();
    auto b = random_uuid();
    ASSERT_TRUE(a && b);
    EXPECT_NE(*a, *b);
    ASSERT_EQ(a->size(), 36u);
    EXPECT_EQ((*a)[14], '4');
    auto hex = random_hex(8);
    ASSERT_TRUE(hex);
    EXPECT_EQ(hex->size(), 16u);
}

}  // namespace
}  // namespace vmshadow::replica
