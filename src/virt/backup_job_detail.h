// SPDX-License-Identifier: MIT
#pragma once
// What BackupJob (backup_job.cpp, backup_job_scratch.cpp) and end_leftover_backup
// (backup_leftovers.cpp) share: the names that mark a job as vmshadow's (backup_job.h, "Marking
// what is vmshadow's"), the run directory's lock, libvirt's job statistics, and the job XML
// libvirt gets (backup_job_xml.cpp).
//
// It is: helpers internal to virt's backup job, with no state of their own. It is not: an API
// for other modules (they use backup_job.h).
//
// Thread-safety: plain functions; each works only on what it is given.

#include <libvirt/libvirt.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "virt/backup_job.h"
#include "virt/domain.h"
#include "virt/domain_xml.h"

namespace vmshadow::virt {

inline constexpr const char* kSocketName = "nbd.sock";
inline constexpr const char* kLockName = "lock";
inline constexpr const char* kRecordName = "job.json";
inline constexpr const char* kScratchPrefix = "vmshadow-scratch-";

std::string random_token();

// Opens (creating) dir/lock and takes its exclusive flock without waiting. nullopt (with
// errno EWOULDBLOCK) when another process holds it.
Result<std::optional<UniqueFd>> try_lock(const std::filesystem::path& dir);

struct JobStats {
    int type = VIR_DOMAIN_JOB_NONE;
    int operation = 0;
    std::uint64_t temp_used = 0;
    std::uint64_t temp_total = 0;
    std::string errmsg;
};

Result<JobStats> job_stats(virDomainPtr dom, unsigned flags, const std::string& what);

// virDomainAbortJob returns before libvirt has torn the job down: wait for the completed
// job's statistics (bounded), which say how it ended.
Result<JobStats> wait_job_end(virDomainPtr dom, const std::string& what);

bool backup_running(const JobStats& s);

bool path_under(const std::filesystem::path& path, const std::filesystem::path& dir);

// A Domain holding its own reference to `dom`.
Domain borrow(virDomainPtr dom);

void remove_quietly(const std::filesystem::path& path,
                    std::vector<std::filesystem::path>* removed = nullptr);

// The XML libvirt gets for a job: the backup (pull mode, NBD on `socket`, a scratch file per
// exported disk) and, with a new checkpoint, the checkpoint (a bitmap on each qcow2 disk
// backed up).
struct JobXml {
    std::string backup;
    std::string checkpoint;  // empty without spec.new_checkpoint
};
JobXml build_job_xml(const BackupSpec& spec, const DomainDescription& described,
                     const std::vector<BackupExport>& exports, const std::filesystem::path& socket);

}  // namespace vmshadow::virt
