// SPDX-License-Identifier: MIT
#include "virt/checkpoints.h"

#include <libvirt/virterror.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <pugixml.hpp>
#include <tuple>

#include "common/time_format.h"
#include "virt/libvirt_error.h"
#include "virt/qemu_img.h"

namespace vmshadow::virt {
namespace {

constexpr std::string_view kPrefix = "vmshadow-";

bool is_lower_hex(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    });
}

std::string quoted(std::string_view name) {
    return "checkpoint '" + std::string(name) + "'";
}

CheckpointHandle lookup(const Domain& domain, std::string_view name) {
    std::string key(name);
    return CheckpointHandle(virDomainCheckpointLookupByName(domain.raw(), key.c_str(), 0));
}

bool domain_running(const Domain& domain) {
    return virDomainIsActive(domain.raw()) == 1;
}

}  // namespace

Result<std::string> make_checkpoint_name(std::string_view repo_id,
                                         std::chrono::system_clock::time_point at) {
    if (repo_id.size() < 8 || !is_lower_hex(repo_id.substr(0, 8))) {
        return fail(ErrorKind::invalid_argument,
                    "repository id '" + std::string(repo_id) + "' is not lower-case hex");
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count();
    std::string stamp = compact_utc(ms / 1000);
    char millis[8];
    std::snprintf(millis, sizeof millis, ".%03dZ", static_cast<int>(ms % 1000));
    return std::string(kPrefix) + std::string(repo_id.substr(0, 8)) + "-" + stamp + millis;
}

std::optional<std::string> checkpoint_repo(std::string_view name) {
    // vmshadow-<8 hex>-<8 digits>T<6 digits>.<3 digits>Z
    if (!name.starts_with(kPrefix)) return std::nullopt;
    std::string_view rest = name.substr(kPrefix.size());
    if (rest.size() != 8 + 1 + 15 + 5 || rest[8] != '-') return std::nullopt;
    std::string_view repo = rest.substr(0, 8);
    std::string_view stamp = rest.substr(9);
    if (!is_lower_hex(repo)) return std::nullopt;
    for (std::size_t i = 0; i < stamp.size(); ++i) {
        char c = stamp[i];
        bool ok = i == 8    ? c == 'T'
                  : i == 15 ? c == '.'
                  : i == 19 ? c == 'Z'
                            : (c >= '0' && c <= '9');
        if (!ok) return std::nullopt;
    }
    return std::string(repo);
}

bool checkpoint_belongs_to(std::string_view name, std::string_view repo_id) {
    auto repo = checkpoint_repo(name);
    return repo && repo_id.size() >= 8 && *repo == repo_id.substr(0, 8);
}

Result<CheckpointInfo> parse_checkpoint_xml(std::string_view xml) {
    pugi::xml_document doc;
    if (!doc.load_buffer(xml.data(), xml.size())) {
        return fail(ErrorKind::invalid_argument, "checkpoint XML does not parse");
    }
    auto root = doc.child("domaincheckpoint");
    if (!root) return fail(ErrorKind::invalid_argument, "no <domaincheckpoint> element");
    CheckpointInfo info;
    info.name = root.child_value("name");
    if (auto parent = root.child("parent")) info.parent = parent.child_value("name");
    info.creation_time = std::atoll(root.child_value("creationTime"));
    for (auto disk : root.child("disks").children("disk")) {
        CheckpointDisk d{disk.attribute("name").value(), ""};
        if (std::string_view(disk.attribute("checkpoint").value()) == "bitmap") {
            d.bitmap = disk.attribute("bitmap").as_string(info.name.c_str());
        }
        info.disks.push_back(std::move(d));
    }
    info.repo = checkpoint_repo(info.name);
    return info;
}

Result<std::vector<CheckpointInfo>> list_checkpoints(const Domain& domain) {
    virDomainCheckpointPtr* raw = nullptr;
    int n = virDomainListAllCheckpoints(domain.raw(), &raw, 0);
    if (n < 0) return fail(libvirt_error(domain.label() + ": list checkpoints"));
    std::vector<CheckpointHandle> handles;
    for (int i = 0; i < n; ++i) handles.emplace_back(raw[i]);
    free(raw);
    std::vector<CheckpointInfo> out;
    for (const auto& h : handles) {
        CString xml(virDomainCheckpointGetXMLDesc(h.get(), VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN));
        if (!xml) return fail(libvirt_error(domain.label() + ": read checkpoint"));
        auto info = parse_checkpoint_xml(xml.get());
        if (!info) return fail(info.error().with_context(domain.label()));
        out.push_back(std::move(*info));
    }
    std::sort(out.begin(), out.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) {
        return std::tie(a.creation_time, a.name) < std::tie(b.creation_time, b.name);
    });
    return out;
}

Result<std::optional<CheckpointInfo>> find_checkpoint(const Domain& domain, std::string_view name) {
    CheckpointHandle h = lookup(domain, name);
    if (!h) {
        Error e = libvirt_error(domain.label() + ": " + quoted(name));
        if (e.kind() == ErrorKind::not_found) return std::optional<CheckpointInfo>();
        return fail(e);
    }
    CString xml(virDomainCheckpointGetXMLDesc(h.get(), VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN));
    if (!xml) return fail(libvirt_error(domain.label() + ": read " + quoted(name)));
    auto info = parse_checkpoint_xml(xml.get());
    if (!info) return fail(info.error().with_context(domain.label()));
    return std::optional<CheckpointInfo>(std::move(*info));
}

Result<std::string> checkpoint_xml(const Domain& domain, std::string_view name) {
    CheckpointHandle h = lookup(domain, name);
    if (!h) return fail(libvirt_error(domain.label() + ": " + quoted(name)));
    CString xml(virDomainCheckpointGetXMLDesc(h.get(), VIR_DOMAIN_CHECKPOINT_XML_SECURE));
    if (!xml) return fail(libvirt_error(domain.label() + ": read XML of " + quoted(name)));
    return std::string(xml.get());
}

Status delete_checkpoint(const Domain& domain, std::string_view name, std::string_view repo_id) {
    if (!checkpoint_belongs_to(name, repo_id)) {
        return fail(ErrorKind::invalid_argument,
                    domain.label() + ": " + quoted(name) + " is not one of repository " +
                        std::string(repo_id.substr(0, 8)) + "'s checkpoints; vmshadow leaves it");
    }
    return delete_own_checkpoint(domain, name);
}

Status delete_own_checkpoint(const Domain& domain, std::string_view name) {
    std::string what = domain.label() + ": delete " + quoted(name);
    if (!checkpoint_repo(name)) {
        return fail(ErrorKind::invalid_argument, what + ": not a vmshadow checkpoint, left alone");
    }
    CheckpointHandle h = lookup(domain, name);
    if (!h) {
        Error e = libvirt_error(what);
        if (e.kind() == ErrorKind::not_found) return {};
        return fail(e);
    }
    if (domain_running(domain)) {
        if (virDomainCheckpointDelete(h.get(), 0) == 0) return {};
        Error e = libvirt_error(what);
        // The bitmaps are gone already (QEMU crashed, image replaced): only metadata is left.
        auto health = check_checkpoint(domain, name);
        if (!health || health->state != CheckpointState::broken) return fail(e);
        if (virDomainCheckpointDelete(h.get(), VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY) < 0) {
            return fail(libvirt_error(what + " (metadata only, its bitmaps are broken)"));
        }
        return {};
    }
    // Not running: libvirt can drop the metadata only; the bitmaps go with qemu-img.
    CString xml(virDomainCheckpointGetXMLDesc(h.get(), VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN));
    if (!xml) return fail(libvirt_error(what));
    auto info = parse_checkpoint_xml(xml.get());
    if (!info) return fail(info.error().with_context(what));
    auto described = domain.describe();
    if (!described) return fail(described.error().with_context(what));
    if (virDomainCheckpointDelete(h.get(), VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY) < 0) {
        return fail(libvirt_error(what + " (metadata only, the VM is not running)"));
    }
    for (const auto& disk : info->disks) {
        if (disk.bitmap.empty()) continue;
        auto spec = std::find_if(described->disks.begin(), described->disks.end(),
                                 [&](const DiskSpec& d) { return d.target == disk.target; });
        if (spec == described->disks.end() || spec->format != "qcow2") continue;
        auto bitmaps = image_bitmaps(spec->path, false);
        if (!bitmaps) return fail(bitmaps.error().with_context(what));
        bool present = std::any_of(bitmaps->begin(), bitmaps->end(),
                                   [&](const ImageBitmap& b) { return b.name == disk.bitmap; });
        if (!present) continue;
        if (auto removed = remove_image_bitmap(spec->path, disk.bitmap); !removed) {
            return fail(removed.error().with_context(what + ", disk " + disk.target));
        }
    }
    return {};
}

Status redefine_checkpoint(const Domain& domain, const std::string& xml) {
    unsigned flags = VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE;
    if (domain_running(domain)) flags |= VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE;
    CheckpointHandle h(virDomainCheckpointCreateXML(domain.raw(), xml.c_str(), flags));
    if (!h) {
        auto info = parse_checkpoint_xml(xml);
        std::string name = info ? info->name : std::string("?");
        Error e = libvirt_error(domain.label() + ": redefine " + quoted(name));
        return fail(e.kind(), e.message() + " (take a full backup to start a new chain)");
    }
    return {};
}

Result<CheckpointHealth> check_checkpoint(const Domain& domain, std::string_view name) {
    std::string label = domain.label() + ": " + quoted(name);
    CheckpointHandle h = lookup(domain, name);
    if (!h) {
        Error e = libvirt_error(label);
        if (e.kind() != ErrorKind::not_found) return fail(e);
        return CheckpointHealth{CheckpointState::missing, label + " does not exist"};
    }
    if (domain_running(domain)) {
        unsigned flags = VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN | VIR_DOMAIN_CHECKPOINT_XML_SIZE;
        CString xml(virDomainCheckpointGetXMLDesc(h.get(), flags));
        if (!xml) {
            Error e = libvirt_error(label + ": bitmap sizes");
            return CheckpointHealth{CheckpointState::broken, e.message()};
        }
        pugi::xml_document doc;
        doc.load_string(xml.get());
        for (auto disk : doc.child("domaincheckpoint").child("disks").children("disk")) {
            if (std::string_view(disk.attribute("checkpoint").value()) != "bitmap") continue;
            // libvirt leaves out the size of a bitmap it cannot find or merge.
            if (!disk.attribute("size")) {
                return CheckpointHealth{CheckpointState::broken,
                                        label + ": bitmap of disk " +
                                            disk.attribute("name").value() +
                                            " is missing or inconsistent; take a full backup"};
            }
        }
        return CheckpointHealth{CheckpointState::usable, ""};
    }
    CString xml(virDomainCheckpointGetXMLDesc(h.get(), VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN));
    if (!xml) return fail(libvirt_error(label));
    auto info = parse_checkpoint_xml(xml.get());
    if (!info) return fail(info.error().with_context(label));
    auto described = domain.describe();
    if (!described) return fail(described.error().with_context(label));
    for (const auto& disk : info->disks) {
        if (disk.bitmap.empty()) continue;
        auto spec = std::find_if(described->disks.begin(), described->disks.end(),
                                 [&](const DiskSpec& d) { return d.target == disk.target; });
        if (spec == described->disks.end()) {
            return CheckpointHealth{CheckpointState::broken,
                                    label + ": disk " + disk.target + " is no longer in the VM"};
        }
        auto bitmaps = image_bitmaps(spec->path, false);
        if (!bitmaps) return fail(bitmaps.error().with_context(label));
        auto b = std::find_if(bitmaps->begin(), bitmaps->end(),
                              [&](const ImageBitmap& x) { return x.name == disk.bitmap; });
        if (b == bitmaps->end()) {
            return CheckpointHealth{CheckpointState::broken, label + ": disk " + disk.target +
                                                                 " has no bitmap '" + disk.bitmap +
                                                                 "'; take a full backup"};
        }
        if (b->in_use || !b->auto_) {
            return CheckpointHealth{CheckpointState::broken,
                                    label + ": bitmap of disk " + disk.target +
                                        (b->in_use ? " is inconsistent (QEMU did not close the "
                                                     "image cleanly)"
                                                   : " is not recording") +
                                        "; take a full backup"};
        }
    }
    return CheckpointHealth{CheckpointState::usable, ""};
}

}  // namespace vmshadow::virt
