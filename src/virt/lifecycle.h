// SPDX-License-Identifier: MIT
#pragma once
// Lifecycle: starting, stopping, removing and resuming-from-saved-state of a domain — what a
// restore's PreRestore and PostRestore do to a VM.
//
// This module is: thin, one-line-error wrappers over virDomainCreate, virDomainDestroy,
// virDomainSuspend/Resume,
// virDomainUndefineFlags (with the checkpoint, snapshot and managed-save metadata, so no
// stale checkpoint survives the VM it belonged to; the NVRAM file is kept, a restore owns
// that file) and virDomainRestoreFlags (a memory image in libvirt's save format, brought back
// running or paused). It is not: deciding when (the VM writer does).
//
// Thread-safety: as libvirt's; one thread per domain at a time.

#include <filesystem>
#include <optional>
#include <string>

#include "common/error.h"
#include "virt/connection.h"
#include "virt/domain.h"

namespace vmshadow::virt {

Status start_domain(const Domain& domain);
// Starts it with its vCPUs paused (resume_domain lets it run): a VM something must be done to
// before the guest writes (a replica failover's first checkpoint).
Status start_domain_paused(const Domain& domain);
// Creates and starts a transient VM (gone once it stops): throwaway VMs leave no definition.
Result<Domain> create_transient(const Connection& connection, const std::string& xml);
// Hard power-off of a running or paused VM; a VM that is not running is left as it is.
Status destroy_domain(const Domain& domain);
// Asks the guest to shut down (ACPI power button, or the guest agent when it answers) and
// returns at once; a VM that is not running is left as it is. Never forces it off.
Status shutdown_domain(const Domain& domain);
// Removes the definition and its checkpoint/snapshot/managed-save metadata.
Status undefine_domain(const Domain& domain);
// Removes what a definition carries besides its XML — its managed-save image and its
// checkpoint and snapshot metadata (not their data in the disks) — keeping it defined: what a
// restore in place drops before it redefines the VM over new disks.
Status drop_saved_metadata(const Domain& domain);
// Pauses the vCPUs (no-op when already paused) / lets a paused VM run again; a VM paused on
// an I/O error retries the failed request when resumed.
Status suspend_domain(const Domain& domain);
Status resume_domain(const Domain& domain);
// Paused because a disk request failed (error_policy='stop'), rather than by anybody's ask.
Result<bool> paused_on_io_error(const Domain& domain);

// Restores a saved memory image; `xml`, when given, replaces the image's domain XML (host-side
// paths only: libvirt refuses another name, UUID or MAC). `running` false leaves it paused.
Status restore_saved_state(const Connection& connection, const std::filesystem::path& file,
                           const std::optional<std::string>& xml, bool running);

}  // namespace vmshadow::virt
