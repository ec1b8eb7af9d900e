// SPDX-License-Identifier: MIT
#pragma once
// VM point: reading a VM's restore point back — what restore, verify and the next backup
// share: the point resolved under the repository's shared lock, and its VM files by role.
//
// This module is: open_vm_point (shared lock held for the caller's whole operation, index
// loaded, POINT resolved — an id, a unique prefix or VM@latest — and refused unless it is a
// VM's), find_file and read_text (a VM file such as "domain_xml", verified chunk by chunk),
// write_point_file (one such file — NVRAM, kernel… — to a host path). It is not: choosing
// where files go (restore, verify) nor writing disks.
//
// Thread-safety: plain functions; the lock lives in the returned value.

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"
#include "repo/lock.h"
#include "repo/repository.h"

namespace vmshadow::engine {

struct VmPoint {
    std::unique_ptr<repo::RepoLock> lock;  // shared: gc waits while the caller reads
    repo::RestorePoint point;
    std::string label;  // "restore point 1a2b3c4d5e6f", for messages
};

// `purpose` ends the refusal of an image-file point ("use `vmshadow image restore`").
Result<VmPoint> open_vm_point(repo::Repository& repo, std::string_view spec,
                              const std::string& operation, std::string_view purpose);

const repo::FileRecord* find_file(const repo::RestorePoint& point, std::string_view role);
Result<std::string> read_text(const repo::Repository& repo, const repo::FileRecord& file);
// Writes `file`, verified chunk by chunk, to `path`: a new file, or a regular file there
// overwritten. Never through a link, into a device, FIFO or socket (invalid_argument;
// restore_target.h): callers decide beforehand whether a file there may be replaced.
Status write_point_file(const repo::Repository& repo, const repo::FileRecord& file,
                        const std::filesystem::path& path);

}  // namespace vmshadow::engine
