// SPDX-License-Identifier: MIT
#pragma once
// The domain XML of a VM started from a replica point (private to replica): the primary's
// stored inactive XML rewritten for this host — test failover's isolated copy or failover's
// VM itself. Pure (pugixml), so unit-tested without libvirt.
//
// Rewrite: <name> and <uuid> set; each replicated disk (by target) a qcow2 file on its
// overlay (no backing chain named: qemu reads it from the overlay); CD-ROM and floppy trays
// emptied and any other disk dropped (their files are the primary's, not on this host or,
// worse, another VM's here); <nvram> dropped (not replicated: libvirt makes a fresh one from
// its template); with `isolate` (test failover) every <interface> gets <link state='down'/>
// and loses its <mac> so libvirt makes a new one and the copy never answers as the original.
// A domain XML carries no checkpoints: the copy starts without any. What reaches into the host
// beyond disks and NICs is dropped (<hostdev>, <filesystem>, <shmem>, smartcard and USB
// redirection, namespaced extensions such as <qemu:commandline>), file-backed consoles and
// channels become ptys and unix sockets lose their path (libvirt makes its own). Direct-boot
// kernel and initrd paths are kept: they must exist on this host.
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow::replica {

struct FailoverDisk {
    std::string target;
    std::filesystem::path overlay;
};

struct FailoverVmSpec {
    std::string name, uuid;
    std::vector<FailoverDisk> disks;
    bool isolate = false;
};

// invalid_argument when the XML is not a domain or lacks a replicated disk's target.
Result<std::string> failover_domain_xml(std::string_view stored_xml, const FailoverVmSpec& spec);

// Random identifiers from OpenSSL's generator: a version-4 UUID (lower case) and `bytes`
// random bytes as lower-case hex (a checkpoint chain id).
Result<std::string> random_uuid();
Result<std::string> random_hex(std::size_t bytes);

}  // namespace vmshadow::replica
