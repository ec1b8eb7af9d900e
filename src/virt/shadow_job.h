// SPDX-License-Identifier: MIT
#pragma once
// ShadowJob: the libvirt side of a shadow copy — a pull-mode backup job without a checkpoint
// (QEMU fleecing: the copy-before-write scratch images are the shadow's diff area) whose NBD
// export on a Unix socket outlives the process that began it. libvirt keeps a pull job until
// it is aborted, so unlike BackupJob (backup_job.h) nothing here ends the job in a
// destructor: the job is found again later by its socket, the mark of a shadow.
//
// This module is: preparing the scratch images and the job XML (the same XML a backup job
// gets: backup_job_detail.h), beginning the job (nothing else: a caller may hold a freeze
// around it), reading its exports, its temp-space statistics and the space its scratch images
// take, and aborting exactly this job — after checking that the domain's running job still
// serves this shadow's socket, so another tool's job is never ended.
// It is not: the record of a shadow, the freeze, the watcher (engine/shadow_*.h).
//
// Marking: a shadow's socket is <dir>/vmshadow-shadow-<id>/nbd.sock, so anyone who sees the
// domain's backup job (a backup refused because a shadow holds libvirt's one job per domain)
// can name the shadow: shadow_id_of_socket().
//
// Errors name the VM and what to do. Thread-safety: plain functions over their arguments.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "virt/domain.h"

namespace vmshadow::virt {

inline constexpr const char* kShadowDirPrefix = "vmshadow-shadow-";

struct ShadowDisk {
    std::string target;       // "vda"
    std::string export_name;  // the NBD export name (libvirt's: the target)
    std::uint64_t size = 0;   // virtual size
    std::filesystem::path scratch;
};

struct ShadowJobPlan {
    std::filesystem::path socket;
    std::vector<ShadowDisk> disks;
    std::string backup_xml;
};

// The folder a shadow's socket lives in: <dir>/vmshadow-shadow-<id>.
std::filesystem::path shadow_socket_dir(const std::filesystem::path& dir, const std::string& id);
// "3fa91c0e" for ".../vmshadow-shadow-3fa91c0e/nbd.sock"; nullopt for any other socket.
std::optional<std::string> shadow_id_of_socket(const std::filesystem::path& socket);

// Every disk a shadow may cover (disk_is_backed_up), in the domain's order.
Result<std::vector<std::string>> shadowable_disks(const Domain& domain);

// Creates the socket folder and one scratch qcow2 per disk (at its virtual size, in
// scratch_dir, named vmshadow-shadow-<id>-<target>.qcow2) and builds the job XML. On failure
// nothing it made is left.
Result<ShadowJobPlan> prepare_shadow_job(const Domain& domain, const std::string& id,
                                         const std::vector<std::string>& disks,
                                         const std::filesystem::path& scratch_dir,
                                         const std::filesystem::path& socket_parent);

// virDomainBackupBegin (REUSE_EXTERNAL, no checkpoint). Nothing else: it may sit inside a
// freeze window. A refusal because a job runs says which (a shadow's: its id).
Status begin_shadow_job(const Domain& domain, const ShadowJobPlan& plan);

// The running job's export names (call after begin, outside any freeze window).
Status describe_shadow_job(const Domain& domain, ShadowJobPlan& plan);

struct ShadowJobStatus {
    bool running = false;         // the domain runs a backup job serving this shadow's socket
    std::uint64_t temp_used = 0;  // bytes copy-before-write moved into scratch (upper bound)
};
Result<ShadowJobStatus> shadow_job_status(const Domain& domain,
                                          const std::filesystem::path& socket);

// Host bytes the scratch images take (allocated blocks); a missing image counts 0.
std::uint64_t scratch_allocated(const std::vector<std::filesystem::path>& scratch);

// The id of the shadow copy whose job the domain runs now (found by its socket, see
// "Marking"); nullopt when it runs no backup job, or another tool's or a backup's.
Result<std::optional<std::string>> shadow_holding_backup_job(const Domain& domain);

// Ends the domain's job if it serves `socket` (waits, bounded, for libvirt to tear it down);
// returns whether it ended one. Another job, or none, is left alone.
Result<bool> abort_shadow_job(const Domain& domain, const std::filesystem::path& socket);

}  // namespace vmshadow::virt
