// SPDX-License-Identifier: MIT
#pragma once
// VmLock: the per-VM operation lock. Every vmshadow operation that changes or depends on one
// VM — backup, restore in place or --as (the lock of the name it creates), instant recovery —
// holds it from before it touches any guest until it ends, so two of them never interleave on
// one VM (two backups freezing one guest, a restore destroying a VM mid-backup).
//
// This module is: an exclusive flock(2) on one file per key under a runtime directory
// (kDefaultVmLockDir, tmpfs: nothing survives a reboot), keys "name-<VM name>" and
// "uuid-<domain UUID>" (a VM is locked by both when its UUID is known, so an operation that
// knows only the name and one that knows the UUID still exclude each other). The holder
// writes its pid, operation and start time into the file; the loser fails at once with
// ErrorKind::conflict naming them. The kernel releases the lock when its holder dies, however
// it dies: a stale file never blocks anybody.
// It is not: the repository lock (repo/lock.h), which orders repository writers.
//
// Thread-safety: a VmLock is one owner's; flock is per open file, so a second acquire of a
// key by the same process conflicts like any other process's.

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace vmshadow::engine {

inline constexpr const char* kDefaultVmLockDir = "/run/vmshadow/vm";

struct VmLockKey {
    std::string vm;    // the VM's name (always)
    std::string uuid;  // its UUID, empty when it does not exist yet (restore --as)
};

class VmLock {
  public:
    // Locks every key of `vms` for `operation` ("backup", "restore", "instant recovery");
    // all or none. `dir` empty: $VMSHADOW_VM_LOCK_DIR, else kDefaultVmLockDir.
    static Result<VmLock> acquire(const std::vector<VmLockKey>& vms, const std::string& operation,
                                  const std::filesystem::path& dir = {});

    VmLock() = default;
    VmLock(VmLock&&) noexcept = default;
    VmLock& operator=(VmLock&&) noexcept = default;

  private:
    std::vector<UniqueFd> fds_;
};

}  // namespace vmshadow::engine
