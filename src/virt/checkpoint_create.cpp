// SPDX-License-Identifier: MIT
// Creating a checkpoint outside a backup job (checkpoints.h): one libvirt call with XML built
// by pugixml, then the full XML read back for whoever keeps it.
#include <libvirt/libvirt.h>

#include <algorithm>
#include <pugixml.hpp>
#include <sstream>

#include "virt/checkpoints.h"
#include "virt/handles.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {

Result<std::string> create_checkpoint(const Domain& domain, std::string_view name,
                                      const std::vector<std::string>& bitmap_disks) {
    const std::string what = domain.label() + ": create checkpoint '" + std::string(name) + "'";
    auto described = domain.describe();
    if (!described) return fail(described.error().with_context(what));
    for (const auto& target : bitmap_disks) {
        bool present = std::any_of(described->disks.begin(), described->disks.end(),
                                   [&](const DiskSpec& d) { return d.target == target; });
        if (!present) return fail(ErrorKind::not_found, what + ": the VM has no disk " + target);
    }
    pugi::xml_document doc;
    auto root = doc.append_child("domaincheckpoint");
    root.append_child("name").text().set(std::string(name).c_str());
    auto disks = root.append_child("disks");
    for (const auto& disk : described->disks) {
        bool bitmap =
            std::find(bitmap_disks.begin(), bitmap_disks.end(), disk.target) != bitmap_disks.end();
        auto node = disks.append_child("disk");
        node.append_attribute("name").set_value(disk.target.c_str());
        node.append_attribute("checkpoint").set_value(bitmap ? "bitmap" : "no");
    }
    std::ostringstream xml;
    doc.save(xml, "", pugi::format_raw);
    CheckpointHandle created(virDomainCheckpointCreateXML(domain.raw(), xml.str().c_str(), 0));
    if (!created) return fail(libvirt_error(what));
    return with_context(checkpoint_xml(domain, name), what);
}

}  // namespace vmshadow::virt
