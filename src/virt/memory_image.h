// SPDX-License-Identifier: MIT
#pragma once
// Memory image: the saved state of a paused VM's memory and devices, in libvirt's save
// format, taken without stopping the VM — the memory half of a saved-state (`image`) backup.
//
// This module is: a memory-only external snapshot (`<memory snapshot='external'>`, every
// disk `snapshot='no'`, VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA): libvirt writes the file and
// keeps no snapshot record, and a VM that was paused stays paused, so its disks can be
// captured at the same instant by a backup job before it is resumed (DESIGN.md, platform
// constraints). `virDomainRestoreFlags` with an XML pointing at restored disks brings such a
// file back running. It is not: pausing or resuming (freeze_guard.h's PauseGuard).
//
// Errors name the VM and the file. Thread-safety: one call per domain at a time.

#include <filesystem>

#include "common/error.h"
#include "virt/domain.h"

namespace vmshadow::virt {

// Writes the memory image of `domain` (which should be paused) to `file`, replacing nothing:
// the file must not exist. On failure no file is left.
Status save_memory_image(const Domain& domain, const std::filesystem::path& file);

// The <domainsnapshot> XML save_memory_image hands libvirt (pure; unit-tested).
std::string memory_snapshot_xml(const std::filesystem::path& file,
                                const std::vector<std::string>& disk_targets);

}  // namespace vmshadow::virt
