// SPDX-License-Identifier: MIT
// The job XML libvirt gets (backup_job_detail.h: build_job_xml).
#include <algorithm>
#include <pugixml.hpp>
#include <sstream>

#include "virt/backup_job_detail.h"

namespace vmshadow::virt {
namespace {

std::string xml_text(const pugi::xml_document& doc) {
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

}  // namespace

JobXml build_job_xml(const BackupSpec& spec, const DomainDescription& described,
                     const std::vector<BackupExport>& exports,
                     const std::filesystem::path& socket) {
    // The XML libvirt gets.
    pugi::xml_document backup;
    auto root = backup.append_child("domainbackup");
    root.append_attribute("mode") = "pull";
    if (spec.incremental_from) {
        root.append_child("incremental").text() = spec.incremental_from->c_str();
    }
    auto server = root.append_child("server");
    server.append_attribute("transport") = "unix";
    server.append_attribute("socket") = socket.c_str();
    auto disks = root.append_child("disks");
    pugi::xml_document checkpoint;
    auto croot = checkpoint.append_child("domaincheckpoint");
    if (spec.new_checkpoint) {
        croot.append_child("name").text() = spec.new_checkpoint->c_str();
        croot.append_child("description").text() = "vmshadow backup";
    }
    auto cdisks = croot.append_child("disks");
    for (const auto& d : described.disks) {
        auto e = std::find_if(exports.begin(), exports.end(),
                              [&](const BackupExport& x) { return x.target == d.target; });
        auto disk = disks.append_child("disk");
        disk.append_attribute("name") = d.target.c_str();
        auto cdisk = cdisks.append_child("disk");
        cdisk.append_attribute("name") = d.target.c_str();
        bool bitmap = e != exports.end() && d.format == "qcow2";
        cdisk.append_attribute("checkpoint") = bitmap ? "bitmap" : "no";
        if (e == exports.end()) {
            disk.append_attribute("backup") = "no";
            continue;
        }
        disk.append_attribute("backup") = "yes";
        disk.append_attribute("type") = "file";
        if (spec.incremental_from && !e->incremental) disk.append_attribute("backupmode") = "full";
        disk.append_child("scratch").append_attribute("file") = e->scratch.c_str();
    }
    JobXml xml;
    xml.backup = xml_text(backup);
    if (spec.new_checkpoint) xml.checkpoint = xml_text(checkpoint);
    return xml;
}

}  // namespace vmshadow::virt
