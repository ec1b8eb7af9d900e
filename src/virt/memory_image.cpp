// SPDX-License-Identifier: MIT
#include "virt/memory_image.h"

#include <libvirt/libvirt.h>

#include <pugixml.hpp>
#include <sstream>

#include "virt/domain_xml.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {

std::string memory_snapshot_xml(const std::filesystem::path& file,
                                const std::vector<std::string>& disk_targets) {
    pugi::xml_document doc;
    auto snap = doc.append_child("domainsnapshot");
    snap.append_child("description").text().set("vmshadow saved-state backup (memory only)");
    auto memory = snap.append_child("memory");
    memory.append_attribute("snapshot") = "external";
    memory.append_attribute("file") = file.c_str();
    auto disks = snap.append_child("disks");
    for (const auto& target : disk_targets) {
        auto disk = disks.append_child("disk");
        disk.append_attribute("name") = target.c_str();
        disk.append_attribute("snapshot") = "no";
    }
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
    return out.str();
}

Status save_memory_image(const Domain& domain, const std::filesystem::path& file) {
    std::error_code ec;
    if (std::filesystem::exists(file, ec)) {
        return fail(ErrorKind::conflict,
                    domain.label() + ": memory image " + file.string() + " already exists");
    }
    auto desc = domain.describe();
    if (!desc) return fail(desc.error());
    // Every disk, CD-ROMs included, must say snapshot='no': the disks are captured by the
    // backup job, not by an overlay.
    std::vector<std::string> targets;
    for (const auto& d : desc->disks) targets.push_back(d.target);
    std::string xml = memory_snapshot_xml(file, targets);
    virDomainSnapshotPtr snap = virDomainSnapshotCreateXML(domain.raw(), xml.c_str(),
                                                           VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA);
    if (!snap) {
        Error e = libvirt_error(domain.label() + ": save memory image to " + file.string());
        std::filesystem::remove(file, ec);
        return std::unexpected(e);
    }
    virDomainSnapshotFree(snap);
    return {};
}

}  // namespace vmshadow::virt
