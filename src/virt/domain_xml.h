// SPDX-License-Identifier: MIT
#pragma once
// What vmshadow reads from a libvirt domain XML: its disks and its guest-agent channel.
// Pure functions over the XML text (pugixml), so they are unit-tested without libvirt.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow::virt {

struct DiskSpec {
    std::string target;       // "vda"
    std::string device;       // "disk", "cdrom", "floppy", "lun"
    std::string source_type;  // "file", "block", "network", "volume"
    std::string path;         // file or device path; empty for network disks or empty CD-ROMs
    std::string format;       // driver type: "qcow2", "raw", ... ("" when unknown)
    bool readonly = false;
    bool shareable = false;
    bool has_backing_store = false;  // <backingStore> with a <source>: a chain of images
};

struct AgentChannelSpec {
    // "connected" / "disconnected" in the live XML of a running VM; empty when inactive.
    std::string state;
};

// Files outside the disks that the VM boots from or keeps state in, which a restore point must
// hold for the VM to come back: a direct-boot kernel/initrd/dtb and the UEFI variable store.
// The firmware code (<loader>) is the host's, shared by every VM, and is not among them.
struct BootFiles {
    std::string kernel;
    std::string initrd;
    std::string dtb;
    std::string nvram;

    struct Ref {
        std::string role;  // as a restore point names the file: nvram, kernel, initrd, dtb
        std::string path;
    };
    // The files set, in that order.
    std::vector<Ref> by_role() const;
};

struct DomainDescription {
    std::string name;
    std::string uuid;
    std::vector<DiskSpec> disks;
    BootFiles boot;
    std::optional<AgentChannelSpec> agent_channel;  // org.qemu.guest_agent.0 virtio channel
};

Result<DomainDescription> parse_domain_xml(std::string_view xml);

// Whether vmshadow backs this disk up: CD-ROMs, floppies, read-only and shareable disks are
// skipped (they are either not the VM's own data or cannot be captured consistently).
// When skipped, `why` says so in words fit for `vm list`.
bool disk_is_backed_up(const DiskSpec& disk, std::string* why = nullptr);

}  // namespace vmshadow::virt
