// SPDX-License-Identifier: MIT
#include "virt/snapshot.h"

#include <libvirt/libvirt.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>

#include "common/process.h"
#include "virt/domain_xml.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::seconds kQemuImgTimeout{60};

bool exists(const std::string& path) {
    std::error_code ec;
    return fs::exists(path, ec);
}

// Whether the running domain now writes to `path` (then a failed call did switch it).
bool domain_uses(const Domain& domain, const std::string& path) {
    auto desc = domain.describe();
    if (!desc) return true;  // unknown: keep the file rather than pull it from under the VM
    for (const auto& d : desc->disks)
        if (d.path == path) return true;
    return false;
}

}  // namespace

std::string external_snapshot_xml(const std::vector<SnapshotOverlay>& overlays,
                                  const std::vector<std::string>& all_targets,
                                  const std::optional<fs::path>& memory_file) {
    pugi::xml_document doc;
    auto snap = doc.append_child("domainsnapshot");
    snap.append_child("description").text().set("vmshadow checkpoint");
    auto memory = snap.append_child("memory");
    if (memory_file) {
        memory.append_attribute("snapshot") = "external";
        memory.append_attribute("file") = memory_file->c_str();
    } else {
        memory.append_attribute("snapshot") = "no";
    }
    auto disks = snap.append_child("disks");
    for (const auto& target : all_targets) {
        auto disk = disks.append_child("disk");
        disk.append_attribute("name") = target.c_str();
        auto it = std::find_if(overlays.begin(), overlays.end(),
                               [&](const SnapshotOverlay& o) { return o.target == target; });
        if (it == overlays.end()) {
            disk.append_attribute("snapshot") = "no";
            continue;
        }
        disk.append_attribute("snapshot") = "external";
        disk.append_child("driver").append_attribute("type") = "qcow2";
        disk.append_child("source").append_attribute("file") = it->overlay.c_str();
    }
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
    return out.str();
}

Status take_external_snapshot(const Domain& domain, const std::vector<SnapshotOverlay>& overlays,
                              const std::optional<fs::path>& memory_file) {
    for (const auto& o : overlays)
        if (exists(o.overlay))
            return fail(ErrorKind::conflict,
                        domain.label() + ": overlay " + o.overlay + " exists already");
    if (memory_file && exists(memory_file->string()))
        return fail(ErrorKind::conflict,
                    domain.label() + ": memory file " + memory_file->string() + " exists already");
    auto desc = domain.describe();
    if (!desc) return fail(desc.error());
    std::vector<std::string> targets;
    for (const auto& d : desc->disks) targets.push_back(d.target);
    std::string xml = external_snapshot_xml(overlays, targets, memory_file);
    unsigned flags = VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
    if (!memory_file) {
        flags |= VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
    } else {
        // LIVE keeps a running guest running while its memory is written; a paused one stays
        // paused (and saved as paused) without it.
        auto state = domain.state();
        if (state && *state == DomainState::running) flags |= VIR_DOMAIN_SNAPSHOT_CREATE_LIVE;
    }
    virDomainSnapshotPtr snap = virDomainSnapshotCreateXML(domain.raw(), xml.c_str(), flags);
    if (!snap) {
        Error e = libvirt_error(domain.label() + ": external snapshot" +
                                (memory_file ? " with memory" : " of the disks"));
        for (const auto& o : overlays)
            if (exists(o.overlay) && !domain_uses(domain, o.overlay)) fs::remove(o.overlay);
        std::error_code ec;
        if (memory_file) fs::remove(*memory_file, ec);
        return std::unexpected(e);
    }
    virDomainSnapshotFree(snap);
    return {};
}

Result<ImageInfo> image_info(const std::string& image) {
    auto out =
        run_checked({"qemu-img", "info", "-U", "--output=json", "--", image}, kQemuImgTimeout);
    if (!out) return fail(out.error().with_context("read the image " + image));
    auto info = nlohmann::json::parse(*out, nullptr, false);
    if (info.is_discarded() || !info.is_object() || !info["format"].is_string() ||
        !info["virtual-size"].is_number_unsigned())
        return fail(ErrorKind::io, "read the image " + image + ": qemu-img printed no format/size");
    return ImageInfo{info["format"].get<std::string>(), info["virtual-size"].get<std::uint64_t>()};
}

Status create_overlay(const std::string& overlay, const std::string& backing) {
    if (exists(overlay)) return fail(ErrorKind::conflict, "overlay " + overlay + " exists already");
    // The backing image may be open in a running QEMU (a checkpoint layer under the VM's
    // current overlay): read its format and size with -U, then create without opening it (-u).
    auto info = image_info(backing);
    if (!info) return fail(info.error().with_context("create overlay " + overlay));
    auto done = run_checked(
        {"qemu-img", "create", "-q", "-f", "qcow2", "-F", info->format, "-b", backing, "-u", "-o",
         "cluster_size=65536", "--", overlay, std::to_string(info->virtual_size)},
        kQemuImgTimeout);
    if (!done) {
        std::error_code ec;
        fs::remove(overlay, ec);
        return fail(done.error().with_context("create overlay " + overlay + " above " + backing));
    }
    return {};
}

Result<std::string> saved_image_xml(const Connection& connection, const fs::path& file) {
    char* xml = virDomainSaveImageGetXMLDesc(connection.raw(), file.c_str(),
                                             VIR_DOMAIN_SAVE_IMAGE_XML_SECURE);
    if (!xml) return fail(libvirt_error("read the domain XML in the save image " + file.string()));
    std::string out = xml;
    std::free(xml);
    return out;
}

Status remove_managed_save(const Domain& domain) {
    int has = virDomainHasManagedSaveImage(domain.raw(), 0);
    if (has < 0) return fail(libvirt_error(domain.label() + ": look for a managed-save image"));
    if (has == 1 && virDomainManagedSaveRemove(domain.raw(), 0) < 0)
        return fail(libvirt_error(domain.label() + ": remove its managed-save image"));
    return {};
}

}  // namespace vmshadow::virt
