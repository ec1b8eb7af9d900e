// SPDX-License-Identifier: MIT
#include "virt/domain_xml.h"

#include <pugixml.hpp>

namespace vmshadow::virt {
namespace {

constexpr const char* kAgentChannelName = "org.qemu.guest_agent.0";

std::string source_path(const pugi::xml_node& source) {
    for (const char* attr : {"file", "dev", "name", "volume"}) {
        if (auto a = source.attribute(attr)) return a.value();
    }
    return {};
}

DiskSpec parse_disk(const pugi::xml_node& disk) {
    DiskSpec spec;
    spec.target = disk.child("target").attribute("dev").value();
    spec.device = disk.attribute("device").as_string("disk");
    spec.source_type = disk.attribute("type").as_string("file");
    spec.path = source_path(disk.child("source"));
    spec.format = disk.child("driver").attribute("type").value();
    spec.readonly = static_cast<bool>(disk.child("readonly"));
    spec.shareable = static_cast<bool>(disk.child("shareable"));
    auto backing = disk.child("backingStore");
    spec.has_backing_store = backing && backing.child("source");
    return spec;
}

}  // namespace

Result<DomainDescription> parse_domain_xml(std::string_view xml) {
    pugi::xml_document doc;
    auto parsed = doc.load_buffer(xml.data(), xml.size());
    if (!parsed) {
        return fail(ErrorKind::invalid_argument,
                    std::string("domain XML does not parse: ") + parsed.description());
    }
    auto domain = doc.child("domain");
    if (!domain) return fail(ErrorKind::invalid_argument, "domain XML has no <domain> element");

    DomainDescription out;
    out.name = domain.child_value("name");
    out.uuid = domain.child_value("uuid");
    auto os = domain.child("os");
    out.boot.kernel = os.child_value("kernel");
    out.boot.initrd = os.child_value("initrd");
    out.boot.dtb = os.child_value("dtb");
    out.boot.nvram = os.child_value("nvram");
    auto devices = domain.child("devices");
    for (auto disk : devices.children("disk")) out.disks.push_back(parse_disk(disk));
    for (auto channel : devices.children("channel")) {
        auto target = channel.child("target");
        if (std::string_view(target.attribute("type").value()) == "virtio" &&
            std::string_view(target.attribute("name").value()) == kAgentChannelName) {
            out.agent_channel = AgentChannelSpec{target.attribute("state").value()};
        }
    }
    return out;
}

bool disk_is_backed_up(const DiskSpec& disk, std::string* why) {
    auto skip = [&](const char* reason) {
        if (why) *why = reason;
        return false;
    };
    if (disk.device == "cdrom") return skip("CD-ROM");
    if (disk.device == "floppy") return skip("floppy");
    if (disk.readonly) return skip("read-only disk");
    if (disk.shareable) return skip("shareable disk (other VMs write it too)");
    return true;
}

std::vector<BootFiles::Ref> BootFiles::by_role() const {
    std::vector<Ref> out;
    for (const auto& [role, path] : {std::pair<const char*, const std::string*>{"nvram", &nvram},
                                     {"kernel", &kernel},
                                     {"initrd", &initrd},
                                     {"dtb", &dtb}})
        if (!path->empty()) out.push_back({role, *path});
    return out;
}

}  // namespace vmshadow::virt
