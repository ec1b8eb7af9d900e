// SPDX-License-Identifier: MIT
#pragma once
// Domain rewrite: the domain XML a restored VM is defined with — the VM writer's PostRestore
// "fix paths, re-attach NICs" as a pure function of the stored XML, so every rule is unit-tested.
//
// This module is, given the inactive domain XML a restore point stored:
//   - disks: each backed-up disk's source points at its restored file, with the restored
//     format; disks that were not backed up (CD-ROMs…) are kept as they were;
//   - boot files (NVRAM, kernel, initrd, dtb) at their restored paths;
//   - a new identity for `--as` (another name, no UUID and no MAC addresses, so libvirt makes
//     new ones; file-backed serial/console logs and unix channel sockets moved out of the
//     original's way: logs into the new folder, socket paths left for libvirt to choose);
//   - disks served over NBD instead (a Unix socket: `verify --boot`), and NICs removed for a
//     throwaway VM that must not reach any network;
//   - NICs: an interface whose network or bridge no longer exists is kept (the guest keeps its
//     device) but attached to no host network with its link down, and a note says so.
// It is not: writing files or calling libvirt (vm_restore_writer.h, the engine).
//
// Thread-safety: pure functions.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::vmwriter {

struct RestoredDisk {
    std::string path;
    std::string format;  // "qcow2" | "raw"
    // Instead of a file: an NBD export on this Unix socket (verify, instant recovery).
    std::string nbd_socket;
};

struct DomainRewriteSpec {
    std::map<std::string, RestoredDisk> disks;      // by target
    std::map<std::string, std::string> boot_files;  // role (nvram, kernel, initrd, dtb) → path
    std::optional<std::string> new_name;            // --as
    std::string log_dir;                            // --as: where file-backed logs go
    bool remove_nics = false;                       // a throwaway VM: no network at all
    // Whether a libvirt network / a host bridge exists now.
    std::function<bool(const std::string&)> network_exists;
    std::function<bool(const std::string&)> bridge_exists;
};

struct DomainRewrite {
    std::string xml;
    std::vector<std::string> notes;  // what was changed that the user should know
};

Result<DomainRewrite> rewrite_domain_xml(std::string_view xml, const DomainRewriteSpec& spec);

}  // namespace vmshadow::vmwriter
