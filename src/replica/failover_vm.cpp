// SPDX-License-Identifier: MIT
#include "replica/failover_vm.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstdint>
#include <pugixml.hpp>
#include <set>
#include <sstream>

#include "common/hex.h"

namespace vmshadow::replica {
namespace {

void set_child_text(pugi::xml_node parent, const char* name, const std::string& value) {
    auto node = parent.child(name);
    if (!node) node = parent.prepend_child(name);
    node.text().set(value.c_str());
}

void remove_children(pugi::xml_node parent, const char* name) {
    while (auto child = parent.child(name)) parent.remove_child(child);
}

void point_disk_at(pugi::xml_node disk, const std::filesystem::path& overlay) {
    auto type = disk.attribute("type");
    if (!type) type = disk.append_attribute("type");
    type.set_value("file");
    auto driver = disk.child("driver");
    if (!driver) {
        driver = disk.prepend_child("driver");
        driver.append_attribute("name").set_value("qemu");
    }
    driver.remove_attribute("type");
    driver.append_attribute("type").set_value("qcow2");
    remove_children(disk, "source");
    remove_children(disk, "backingStore");
    auto source = disk.insert_child_after("source", driver);
    source.append_attribute("file").set_value(overlay.c_str());
}

void isolate_interface(pugi::xml_node nic) {
    remove_children(nic, "mac");
    remove_children(nic, "link");
    nic.append_child("link").append_attribute("state").set_value("down");
}

// Elements through which a domain reaches into its host beyond its disks and NICs: another
// host's devices, folders and QEMU arguments have no business here (and a primary is trusted
// to send disk contents, not to run commands on the replica host).
void drop_host_reaching(pugi::xml_node domain, pugi::xml_node devices) {
    std::vector<pugi::xml_node> drop;
    for (auto child : domain.children())
        if (std::string_view(child.name()).find(':') != std::string_view::npos)
            drop.push_back(child);  // <qemu:commandline> and the like
    for (auto device : devices.children()) {
        std::string_view name = device.name();
        if (name == "hostdev" || name == "filesystem" || name == "smartcard" ||
            name == "redirdev" || name == "shmem")
            drop.push_back(device);
    }
    for (auto node : drop) node.parent().remove_child(node);
}

// A console or channel writing into a file or socket the primary named: on this host that
// folder may not exist or, worse, be the original VM's (one machine, two libvirt hosts).
// Files become a pty; unix sockets lose their path, so libvirt makes one of its own.
void detach_character_devices(pugi::xml_node devices) {
    for (const char* kind : {"serial", "console", "parallel", "channel"}) {
        for (auto dev : devices.children(kind)) {
            std::string_view type = dev.attribute("type").value();
            if (type == "file") {
                dev.attribute("type").set_value("pty");
                remove_children(dev, "source");
                remove_children(dev, "log");
            } else if (type == "unix") {
                if (auto source = dev.child("source")) source.remove_attribute("path");
            }
        }
    }
}

}  // namespace

Result<std::string> failover_domain_xml(std::string_view stored_xml, const FailoverVmSpec& spec) {
    pugi::xml_document doc;
    auto parsed = doc.load_buffer(stored_xml.data(), stored_xml.size());
    auto domain = doc.child("domain");
    if (!parsed || !domain)
        return fail(ErrorKind::invalid_argument,
                    "the stored domain XML of VM " + spec.name + " is not a <domain>");
    domain.remove_attribute("id");
    set_child_text(domain, "uuid", spec.uuid);
    set_child_text(domain, "name", spec.name);
    remove_children(domain.child("os"), "nvram");

    auto devices = domain.child("devices");
    drop_host_reaching(domain, devices);
    detach_character_devices(devices);
    std::set<std::string> placed;
    std::vector<pugi::xml_node> dropped;
    for (auto disk : devices.children("disk")) {
        std::string target = disk.child("target").attribute("dev").value();
        std::string device = disk.attribute("device") ? disk.attribute("device").value() : "disk";
        auto wanted = std::find_if(spec.disks.begin(), spec.disks.end(),
                                   [&](const FailoverDisk& d) { return d.target == target; });
        if (wanted != spec.disks.end() && device == "disk") {
            point_disk_at(disk, wanted->overlay);
            placed.insert(target);
        } else if (device == "cdrom" || device == "floppy") {
            remove_children(disk, "source");
            remove_children(disk, "backingStore");
        } else {
            dropped.push_back(disk);
        }
    }
    for (auto disk : dropped) devices.remove_child(disk);
    for (const auto& d : spec.disks)
        if (!placed.contains(d.target))
            return fail(ErrorKind::invalid_argument,
                        "the stored domain XML of VM " + spec.name + " has no disk " + d.target);
    if (spec.isolate)
        for (auto nic : devices.children("interface")) isolate_interface(nic);

    std::ostringstream out;
    doc.save(out, "  ");
    return out.str();
}

Result<std::string> random_hex(std::size_t bytes) {
    std::vector<std::uint8_t> buffer(bytes);
    if (RAND_bytes(buffer.data(), static_cast<int>(buffer.size())) != 1)
        return fail(ErrorKind::internal, "OpenSSL's random generator failed");
    return hex_encode(buffer);
}

Result<std::string> random_uuid() {
    std::uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return fail(ErrorKind::internal, "OpenSSL's random generator failed");
    b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
    b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
    std::string h = hex_encode(b);
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
           "-" + h.substr(20);
}

}  // namespace vmshadow::replica
