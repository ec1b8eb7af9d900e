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
// it (a crashed in-process session in the fault-injection tests); such locks are removed.
// A lock file this build cannot read (garbage, empty, truncated, a field missing or of the
// wrong type, a newer lock version) is held by an unknown holder in an unknown mode: every
// acquire() fails with `locked` naming the file, until a user removes it.
// Between hosts (a repository on S3 shared by many): a holder refreshes its lock every
// kLockRefreshSeconds (a background thread, while it holds it), recording the time as
// "refreshed": it stores the lock under a new name, asks whether the old one is still there,
// and removes it (restic's order). A lock of another host whose refresh (the later of its
// "refreshed" time and its object's modification time, the store's clock) is more than
// kLockStaleSeconds behind this host's clock is stale: its holder is gone or cut off. A stale lock
// still blocks acquire(), whose `locked` error says it is stale and that `vmshadow repo unlock`
// removes it; a fresh lock of another host is removed only by `repo unlock --remove-all`. The 30
// minutes are six missed refreshes, and far more than the clock skew of hosts kept by NTP.
// A lock's "time" (when it was taken) plays no part: a lock with a future time is held.
// A lost lock: at each refresh the holder asks whether its lock object is still there. When
// it is gone (another host ran `repo unlock --remove-all`), the holder drops the new one and
// writes none again: the lock is lost, held() fails from then on with "lock was removed by another
// process, operation aborted", and the on_lost callback (the backup session's) stops the
// operation. A refresh that fails (the store unreachable) is logged as a warning with its
// reason and tried again every kLockRefreshSeconds / 5; once kLockGiveUpSeconds have passed
// since the last one that succeeded, the lock is lost too: five minutes before other hosts
// may call it stale. Operations that publish (a backup's index and commit, gc's deletes,
// prune's forget) call verify() first, which asks the store now, so a removal the refresher
// has not seen yet still stops them. Between that question and the write that follows there
// remains one request's window, as in restic. remove_locks() lists again after removing and
// removes the locks its holders stored meanwhile, so a removal that meets a refresh holds.
//
// Thread-safety: a RepoLock object belongs to one thread, except held() and on_lost(), which
// any thread may call (the callback runs on the refresher's); the registry of held locks is
// internally synchronised.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "repo/env.h"

namespace vmshadow::repo {

enum class LockMode { shared, exclusive };

inline constexpr std::int64_t kLockRefreshSeconds = 5 * 60;
inline constexpr std::int64_t kLockStaleSeconds = 30 * 60;
inline constexpr std::int64_t kLockGiveUpSeconds = kLockStaleSeconds - kLockRefreshSeconds;
// Tests shorten the refresh interval (milliseconds; 0 = kLockRefreshSeconds again); the retry
// pause after a failed refresh and the give-up time scale with it. VMSHADOW_TEST_LOCK_REFRESH_MS
// in the environment sets it for a whole process (the integration tests' vmshadow).
void set_lock_refresh_interval_for_tests(std::int64_t milliseconds);

// Where a lock's warnings go (a failed refresh); empty = nowhere.
using LockLog = std::function<void(const std::string&)>;

class RepoLock {
  public:
    // Fails with ErrorKind::locked naming the holder (operation, pid, host, since).
    // With a `wait`, it retries while the repository is locked for up to that long (restic's
    // --retry-lock): pauses of 1 s doubling to 30 s, each drawn from ½–1½ of that (jitter).
    // Other errors return at once. `log` receives the lock's warnings while it is held.
    static Result<std::unique_ptr<RepoLock>> acquire(Env& env, const std::string& root,
                                                     LockMode mode, const std::string& operation,
                                                     std::chrono::seconds wait = {},
                                                     LockLog log = {});
    ~RepoLock();
    RepoLock(const RepoLock&) = delete;
    RepoLock& operator=(const RepoLock&) = delete;

    LockMode mode() const { return mode_; }  // the owning thread's view
    // Turns an exclusive lock into a shared one (after cleanup, a backup lets others in); a
    // lock removed meanwhile is lost, as at a refresh.
    Status downgrade();
    // Removes the lock file now; the destructor does the same if not called.
    Status release();
    // Rewrites the lock with a new refresh time (the refresher thread does it on its own),
    // unless its object is gone: then the lock is lost and this fails as held() will.
    Status refresh();
    // Fails (ErrorKind::locked, saying why and that the operation was aborted) once the lock
    // is lost; cheap, for loops to ask between steps.
    Status held() const;
    // held(), and whether the lock object is in the store right now (one request): what an
    // operation asks right before it publishes. An error asking is returned as it is.
    Status verify();
    // Called once, on the refresher's thread, when the lock is lost (at once if it already
    // is); an empty function unregisters, waiting for a call in progress to end.
    void on_lost(std::function<void(const Error&)> callback);

  private:
    struct Refresher;
    RepoLock(Env& env, std::string root, std::string id, LockMode mode, std::string operation,
             LockLog log);
    // One attempt of acquire().
    static Result<std::unique_ptr<RepoLock>> try_acquire(Env& env, const std::string& root,
                                                         LockMode mode,
                                                         const std::string& operation,
                                                         const LockLog& log);
    std::string path_of(const std::string& id) const;
    std::string path() const;  // the lock object's now
    Error removed_error(const std::string& path) const;
    // Stores the lock under `id` (write_mutex_ held, or not yet shared with the refresher).
    Status write_file(const std::string& id);
    Status start_refresher();
    void stop_refresher();
    // Refreshes until stopped or lost; a failed refresh is logged and retried sooner.
    void refresh_loop(Refresher& r);
    void lose(const Error& why);
    // Calls on_lost_ once the lock is lost, if it was not called yet; callback_mutex_ held.
    void notify_lost();

    Env& env_;
    std::string root_;
    mutable std::mutex id_mutex_;
    std::string id_;  // its name under locks/: a new one at every refresh
    LockMode mode_;
    std::string operation_;
    bool held_ = true;
    std::int64_t taken_;
    LockLog log_;
    std::mutex write_mutex_;  // held by a refresh (the refresher's, downgrade's) and verify()
    mutable std::mutex lost_mutex_;
    std::optional<Error> lost_;  // why the lock is lost, once it is
    std::atomic<bool> is_lost_{false};
    std::mutex callback_mutex_;  // held while the callback runs
    std::function<void(const Error&)> on_lost_;
    bool notified_ = false;
    // The refresher thread and what stops it, on the heap: a process forked while the lock
    // is held (nbdkit going into the background) has a copy of it whose thread and waiters
    // exist only in the parent, so the child must neither join nor destroy it (a condition
    // variable with waiters waits for them to leave in its destructor): it is left behind.
    struct Refresher {
        std::mutex mutex;
        std::condition_variable cv;
        bool stopping = false;
        std::thread thread;
        int pid = 0;  // the process the thread runs in
    };
    std::unique_ptr<Refresher> refresher_;
};

// One file under locks/, as `repo unlock` shows it.
struct LockInfo {
    std::string id;  // its file name under locks/
    std::string host;
    long pid = 0;
    bool exclusive = false;
    std::string operation;
    std::string time;            // when it was taken, ISO 8601 UTC as written
    std::int64_t since = 0;      // `time` as Unix seconds; 0 when it cannot be read
    bool readable = true;        // false: not a lock file this vmshadow can read (held)
    bool holder_dead = false;    // this host, and its process is gone (the staleness rule above)
    std::int64_t refreshed = 0;  // the last sign of life, Unix seconds; 0 when unknown
    bool stale = false;          // another host's, not refreshed for kLockStaleSeconds
};

// Every lock file under locks/, oldest first, judged by the same rule acquire() uses.
Result<std::vector<LockInfo>> list_locks(Env& env, const std::string& root);

// Removes the locks whose holder is known dead or that are stale, or, with remove_all, every lock
// file (unreadable ones too): the caller must say so, since a live process may hold one. Takes no
// lock itself. Returns the locks it removed; one that vanished meanwhile is not among them.
Result<std::vector<LockInfo>> remove_locks(Env& env, const std::string& root, bool remove_all);

}  // namespace vmshadow::repo
