// SPDX-License-Identifier: MIT
#pragma once
// Repository locks: shared for backups and readers, exclusive for forget, prune and gc.
//
// This module is: lock files under locks/ (one per holder, JSON: pid, process start time,
// host, mode, operation, time), their acquisition, and the detection of stale locks. It is
// not: a mutex between threads of one process (two sessions in one process are two
// holders, exactly like two processes).
//
// Protocol: a holder writes its lock file atomically, then lists locks/. A shared holder
// backs off if any live exclusive lock exists; an exclusive holder backs off if any other
// live lock exists. Both racing holders may back off (never both proceed). A lock is stale
// when its host is this host and its process is gone (pid absent, or the pid now belongs to
// a process with another start time), or when this process wrote it and no longer holds
// it (a crashed in-process session in the fault-injection tests); stale locks are removed.
// Locks of other hosts are never broken automatically.
//
// Thread-safety: a RepoLock object belongs to one thread; the registry of held locks is
// internally synchronised.

#include <memory>
#include <string>

#include "common/error.h"
#include "repo/env.h"

namespace vmshadow::repo {

enum class LockMode { shared, exclusive };

class RepoLock {
  public:
    // Fails with ErrorKind::locked naming the holder (operation, pid, host, since).
    static Result<std::unique_ptr<RepoLock>> acquire(Env& env, const std::string& root,
                                                     LockMode mode, const std::string& operation);
    ~RepoLock();
    RepoLock(const RepoLock&) = delete;
    RepoLock& operator=(const RepoLock&) = delete;

    LockMode mode() const { return mode_; }
    // Turns an exclusive lock into a shared one (after cleanup, a backup lets others in).
    Status downgrade();
    // Removes the lock file now; the destructor does the same if not called.
    Status release();

  private:
    RepoLock(Env& env, std::string root, std::string id, LockMode mode, std::string operation);
    Status write_file();

    Env& env_;
    std::string root_;
    std::string id_;
    LockMode mode_;
    std::string operation_;
    bool held_ = true;
};

}  // namespace vmshadow::repo
