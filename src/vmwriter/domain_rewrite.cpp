// SPDX-License-Identifier: MIT
#include "vmwriter/domain_rewrite.h"

#include <filesystem>
#include <pugixml.hpp>
#include <sstream>

namespace vmshadow::vmwriter {
namespace {

void set_attribute(pugi::xml_node node, const char* name, const std::string& value) {
    auto a = node.attribute(name);
    if (!a) a = node.append_attribute(name);
    a.set_value(value.c_str());
}

void rewrite_disks(pugi::xml_node devices, const DomainRewriteSpec& spec) {
    for (auto disk : devices.children("disk")) {
        std::string target = disk.child("target").attribute("dev").value();
        auto it = spec.disks.find(target);
        if (it == spec.disks.end()) continue;
        auto source = disk.child("source");
        if (!source) source = disk.prepend_child("source");
        for (const char* a : {"file", "dev", "name", "volume", "pool", "protocol"})
            source.remove_attribute(a);
        while (source.first_child()) source.remove_child(source.first_child());
        if (it->second.nbd_socket.empty()) {
            set_attribute(disk, "type", "file");
            set_attribute(source, "file", it->second.path);
        } else {
            set_attribute(disk, "type", "network");
            set_attribute(source, "protocol", "nbd");
            auto host = source.append_child("host");
            set_attribute(host, "transport", "unix");
            set_attribute(host, "socket", it->second.nbd_socket);
        }

        auto driver = disk.child("driver");
        if (!driver) {
            driver = disk.prepend_child("driver");
            set_attribute(driver, "name", "qemu");
        }
        set_attribute(driver, "type", it->second.format);
        if (!it->second.nbd_socket.empty()) {
            // A server that goes away must pause the guest, not fail its writes.
            set_attribute(driver, "error_policy", "stop");
            set_attribute(driver, "rerror_policy", "stop");
        }
        // The restored image stands alone: no backing chain.
        while (auto backing = disk.child("backingStore")) disk.remove_child(backing);
    }
}

void rewrite_boot_files(pugi::xml_node os, const DomainRewriteSpec& spec) {
    for (const auto& [role, path] : spec.boot_files) {
        auto node = os.child(role.c_str());
        if (!node) continue;
        node.text().set(path.c_str());  // <nvram template=…> keeps its template
    }
}

void new_identity(pugi::xml_node domain, pugi::xml_node devices, const DomainRewriteSpec& spec,
                  DomainRewrite& out) {
    domain.child("name").text().set(spec.new_name->c_str());
    if (auto uuid = domain.child("uuid")) domain.remove_child(uuid);
    for (auto nic : devices.children("interface"))
        if (auto mac = nic.child("mac")) nic.remove_child(mac);
    // Serial/console logs: a second VM writing the original's log file would garble it.
    int n = 0;
    for (const char* kind : {"serial", "console"}) {
        for (auto dev : devices.children(kind)) {
            if (std::string_view(dev.attribute("type").value()) == "file") {
                if (auto source = dev.child("source")) {
                    std::string name =
                        std::filesystem::path(source.attribute("path").value()).filename().string();
                    if (name.empty()) name = std::string(kind) + std::to_string(n) + ".log";
                    set_attribute(source, "path",
                                  (std::filesystem::path(spec.log_dir) / name).string());
                }
            }
            if (auto log = dev.child("log")) {
                std::string name = std::string(kind) + std::to_string(n) + ".log";
                set_attribute(log, "file", (std::filesystem::path(spec.log_dir) / name).string());
            }
            ++n;
        }
    }
    // Unix channel sockets: libvirt picks a per-domain path when none is given.
    for (auto channel : devices.children("channel")) {
        if (std::string_view(channel.attribute("type").value()) != "unix") continue;
        if (auto source = channel.child("source")) channel.remove_child(source);
    }
    out.notes.push_back(
        "new UUID and MAC addresses (libvirt generated them), so it can run "
        "beside the original");
}

void rewrite_nics(pugi::xml_node devices, const DomainRewriteSpec& spec, DomainRewrite& out) {
    for (auto nic : devices.children("interface")) {
        std::string type = nic.attribute("type").value();
        auto source = nic.child("source");
        std::string what, name;
        bool present = true;
        if (type == "network") {
            name = source.attribute("network").value();
            what = "network";
            present = spec.network_exists && spec.network_exists(name);
        } else if (type == "bridge") {
            name = source.attribute("bridge").value();
            what = "bridge";
            present = spec.bridge_exists && spec.bridge_exists(name);
        } else {
            continue;
        }
        if (present) continue;
        // Keep the guest's device (its MAC and model) but on no host network: an ethernet
        // interface with no target behaves as an unplugged cable.
        set_attribute(nic, "type", "ethernet");
        if (source) nic.remove_child(source);
        auto link = nic.child("link");
        if (!link) link = nic.append_child("link");
        set_attribute(link, "state", "down");
        out.notes.push_back("NIC on " + what + " '" + name +
                            "' kept with its link down on no host network: that " + what +
                            " does not exist here (attach it with `virsh domif-setlink` and "
                            "`virsh edit` once it does)");
    }
}

}  // namespace

Result<DomainRewrite> rewrite_domain_xml(std::string_view xml, const DomainRewriteSpec& spec) {
    pugi::xml_document doc;
    auto parsed = doc.load_buffer(xml.data(), xml.size());
    if (!parsed) {
        return fail(ErrorKind::corruption,
                    std::string("stored domain XML does not parse: ") + parsed.description());
    }
    auto domain = doc.child("domain");
    if (!domain) return fail(ErrorKind::corruption, "stored domain XML has no <domain>");
    DomainRewrite out;
    auto devices = domain.child("devices");
    rewrite_disks(devices, spec);
    rewrite_boot_files(domain.child("os"), spec);
    if (spec.new_name) new_identity(domain, devices, spec, out);
    if (spec.remove_nics) {
        while (auto nic = devices.child("interface")) devices.remove_child(nic);
    } else {
        rewrite_nics(devices, spec, out);
    }
    std::ostringstream text;
    doc.save(text, "  ", pugi::format_default | pugi::format_no_declaration);
    out.xml = text.str();
    return out;
}

}  // namespace vmshadow::vmwriter
