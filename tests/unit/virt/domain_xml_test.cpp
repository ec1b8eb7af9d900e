// SPDX-License-Identifier: MIT
#include "virt/domain_xml.h"

#include <gtest/gtest.h>

namespace vmshadow::virt {
namespace {

constexpr const char* kXml = R"(<domain type='qemu'>
  <name>web1</name>
  <uuid>0b6f3e8e-2f6a-4a51-9c49-6f2a8e1c7d10</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web1.qcow2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <channel type='unix'>
      <source mode='bind' path='/run/libvirt/qemu/channel/1-web1/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
    </channel>
  </devices>
</domain>)";

TEST(DomainXml, ParsesDisksWithTargetPathFormatAndFlags) {
    auto d = parse_domain_xml(kXml);
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(d->name, "web1");
    ASSERT_EQ(d->disks.size(), 3u);
    EXPECT_EQ(d->disks[0].target, "vda");
    EXPECT_EQ(d->disks[0].path, "/var/lib/libvirt/images/web1.qcow2");
    EXPECT_EQ(d->disks[0].format, "qcow2");
    EXPECT_FALSE(d->disks[0].has_backing_store);  // an empty <backingStore/> ends the chain
    EXPECT_EQ(d->disks[1].source_type, "block");
    EXPECT_EQ(d->disks[1].path, "/dev/vg0/data");
    EXPECT_TRUE(d->disks[1].shareable);
    EXPECT_EQ(d->disks[2].device, "cdrom");
    EXPECT_TRUE(d->disks[2].path.empty());
}

TEST(DomainXml, FindsTheAgentChannelAndItsState) {
    auto d = parse_domain_xml(kXml);
    ASSERT_TRUE(d);
    ASSERT_TRUE(d->agent_channel);
    EXPECT_EQ(d->agent_channel->state, "connected");
}

TEST(DomainXml, NoChannelMeansNoAgent) {
    auto d = parse_domain_xml("<domain><name>x</name><devices/></domain>");
    ASSERT_TRUE(d);
    EXPECT_FALSE(d->agent_channel);
}

TEST(DomainXml, FindsDirectBootFilesAndNvramButNotTheSharedLoader) {
    auto d = parse_domain_xml(R"(<domain><name>a</name><os>
      <type arch='x86_64'>hvm</type>
      <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
      <nvram>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram>
      <kernel>/boot/vmlinuz</kernel><initrd>/boot/initrd.img</initrd>
    </os></domain>)");
    ASSERT_TRUE(d) << d.error().message();
    EXPECT_EQ(d->boot.kernel, "/boot/vmlinuz");
    EXPECT_EQ(d->boot.initrd, "/boot/initrd.img");
    EXPECT_EQ(d->boot.nvram, "/var/lib/libvirt/qemu/nvram/a_VARS.fd");
    EXPECT_EQ(d->boot.dtb, "");
    auto refs = d->boot.by_role();  // the files set, by the role a restore point names them
    ASSERT_EQ(refs.size(), 3u);
    EXPECT_EQ(refs[0].role + "=" + refs[0].path, "nvram=/var/lib/libvirt/qemu/nvram/a_VARS.fd");
    EXPECT_EQ(refs[1].role + "=" + refs[1].path, "kernel=/boot/vmlinuz");
    EXPECT_EQ(refs[2].role + "=" + refs[2].path, "initrd=/boot/initrd.img");
}

TEST(DomainXml, MalformedXmlIsAnInvalidArgument) {
    auto d = parse_domain_xml("<domain><name>x</name>");
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().kind(), ErrorKind::invalid_argument);
}

TEST(DomainXml, CdromSharedAndReadOnlyDisksAreSkippedWithAReason) {
    auto d = parse_domain_xml(kXml);
    ASSERT_TRUE(d);
    std::string why;
    EXPECT_TRUE(disk_is_backed_up(d->disks[0], &why));
    EXPECT_FALSE(disk_is_backed_up(d->disks[1], &why));
    EXPECT_NE(why.find("shareable"), std::string::npos);
    EXPECT_FALSE(disk_is_backed_up(d->disks[2], &why));
    EXPECT_EQ(why, "CD-ROM");
}

}  // namespace
}  // namespace vmshadow::virt
