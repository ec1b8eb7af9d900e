// SPDX-License-Identifier: MIT
#pragma once
// External snapshots without libvirt metadata: how a checkpoint (engine/checkpoint_ops.h)
// freezes a running VM's disks into read-only layers and, for a standard checkpoint, saves
// its memory — and the overlay images and saved-image XML that applying one needs.
//
// This module is:
//   - take_external_snapshot: virDomainSnapshotCreateXML with NO_METADATA | ATOMIC and
//     DISK_ONLY (no memory) or LIVE (memory saved to a file while the VM runs; libvirt pauses
//     it only for the last pass and the disk switch; a paused VM is saved as it is). Each listed
//     disk goes onto a new qcow2 overlay (created by libvirt) backed by the image it was writing
//     to, which is left read-only under it; every other disk (CD-ROMs, read-only, shareable) says
//     snapshot='no'. libvirt keeps no snapshot record, so nothing in libvirt must later be
//     reverted or deleted (libvirt 9.0 can revert to no external snapshot).
//   - create_overlay: `qemu-img create -f qcow2 -b BACKING -F FORMAT` for a VM that is off
//     or about to be put onto a checkpoint; image_info reads an image's format and size.
//   - saved_image_xml: the domain XML inside a save image (virDomainSaveImageGetXMLDesc), the
//     one to edit into a restore's dxml.
// It is not: the checkpoint record or policy (engine/checkpoint_*), nor restoring
// (lifecycle.h's restore_saved_state).
//
// Errors name the VM and the file. Thread-safety: one call per domain at a time.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "virt/connection.h"
#include "virt/domain.h"

namespace vmshadow::virt {

struct SnapshotOverlay {
    std::string target;   // "vda"
    std::string overlay;  // absolute path of the qcow2 overlay to create; must not exist
};

// The <domainsnapshot> XML take_external_snapshot hands libvirt (pure; unit-tested).
// `all_targets` are every disk of the domain; those not in `overlays` get snapshot='no'.
std::string external_snapshot_xml(const std::vector<SnapshotOverlay>& overlays,
                                  const std::vector<std::string>& all_targets,
                                  const std::optional<std::filesystem::path>& memory_file);

// Puts each disk of `overlays` onto its new overlay; with `memory_file`, also saves the
// memory there (LIVE). On failure no overlay and no memory file made by this call is left
// and the VM runs on its old images.
Status take_external_snapshot(const Domain& domain, const std::vector<SnapshotOverlay>& overlays,
                              const std::optional<std::filesystem::path>& memory_file);

struct ImageInfo {
    std::string format;  // "qcow2", "raw"
    std::uint64_t virtual_size = 0;
};
// What qemu-img reads `image` as (-U: the image may be in use by a running VM).
Result<ImageInfo> image_info(const std::string& image);

// A qcow2 overlay at `overlay` backed by `backing` (its format as qemu-img reads it), the
// same size. Fails with conflict when `overlay` exists; leaves no file on failure.
Status create_overlay(const std::string& overlay, const std::string& backing);

// The domain XML stored in a libvirt save image (secure: with what a restore needs).
Result<std::string> saved_image_xml(const Connection& connection,
                                    const std::filesystem::path& file);

// Removes the VM's managed-save image, if it has one (it would resume onto other disks).
Status remove_managed_save(const Domain& domain);

}  // namespace vmshadow::virt
