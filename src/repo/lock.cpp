// SPDX-License-Identifier: MIT
#include "repo/lock.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "common/process.h"
#include "common/time_format.h"
#include "repo/format.h"
#include "repo/manifest.h"

namespace vmshadow::repo {
namespace {

std::mutex g_held_mutex;
std::set<std::string> g_held;  // lock ids this process holds

std::string hostname() {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    return buf;
}

bool held_here(const std::string& id) {
    std::lock_guard lock(g_held_mutex);
    return g_held.contains(id);
}

// The staleness rule: this host, and the process is gone (or the pid now names a process
// with another start time), or this process wrote it and no longer holds it. A lock of
// another host is never stale: its process cannot be seen from here.
bool is_stale(const std::string& host, pid_t pid, const std::string& start, const std::string& id) {
    if (host != hostname()) return false;
    if (pid == ::getpid()) return !held_here(id);
    // Without a start time a running pid can't be told from a reused one: it holds the lock.
    // A zombie has ended: its lock is stale.
    if (start.empty()) return !process_running(pid);
    return !ProcessId{pid, start}.alive();
}

// The version of the lock file format this build writes and understands. A lock of a newer
// version is a lock this build cannot judge: held, like any lock it cannot read.
constexpr int kLockVersion = 1;

// A lock file judged by one rule set, for acquire() and `repo unlock` alike. Anything that is
// not a complete lock of a version this build knows (garbage, empty, truncated JSON, a field
// missing or of the wrong type, a newer version) is unreadable, and an unreadable lock is
// HELD until a user removes it: vmshadow cannot tell whose it is or whether it still runs.
LockInfo describe(const std::string& id, const Bytes& bytes) {
    LockInfo info;
    info.id = id;
    info.readable = false;
    nlohmann::json j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return info;
    using Json = nlohmann::json;
    auto is = [&](const char* key, bool (*check)(const Json&)) {
        return j.contains(key) && check(j[key]);
    };
    if (j.contains("version") &&
        (!j["version"].is_number_integer() || j["version"].get<long long>() > kLockVersion))
        return info;
    if (!is("host", [](const Json& v) { return v.is_string() && !v.empty(); }) ||
        !is("pid",
            [](const Json& v) {
                return v.is_number_integer() && v.get<long long>() > 0 &&
                       v.get<long long>() <= INT32_MAX;
            }) ||
        !is("exclusive", [](const Json& v) { return v.is_boolean(); }) ||
        !is("operation", [](const Json& v) { return v.is_string(); }) ||
        !is("time", [](const Json& v) { return v.is_string(); }) ||
        (j.contains("start_time") && !j["start_time"].is_string()))
        return info;
    info.readable = true;
    info.host = j["host"].get<std::string>();
    info.pid = j["pid"].get<long>();
    info.exclusive = j["exclusive"].get<bool>();
    info.operation = j["operation"].get<std::string>();
    info.time = j["time"].get<std::string>();
    info.since = parse_iso8601_utc(info.time).value_or(0);
    info.holder_dead =
        is_stale(info.host, static_cast<pid_t>(info.pid), j.value("start_time", std::string()), id);
    if (j.contains("refreshed") && j["refreshed"].is_string())
        info.refreshed = parse_iso8601_utc(j["refreshed"].get<std::string>()).value_or(0);
    info.refreshed = std::max(info.refreshed, info.since);
    return info;
}

// Another host's lock is judged by when it last showed life: its own refresh time, or the
// object's modification time (the store's clock, which a skewed holder clock cannot fake
// into the past).
void judge_freshness(Env& env, const std::string& path, LockInfo& info) {
    if (!info.readable || info.host == hostname()) return;
    if (auto mtime = env.modified_time(path)) info.refreshed = std::max(info.refreshed, *mtime);
    info.stale = info.refreshed > 0 && ::time(nullptr) - info.refreshed > kLockStaleSeconds;
}

// 0 = kLockRefreshSeconds; VMSHADOW_TEST_LOCK_REFRESH_MS is read once, at the first lock.
std::atomic<std::int64_t> g_refresh_ms{[] {
    const char* ms = std::getenv("VMSHADOW_TEST_LOCK_REFRESH_MS");
    return ms ? std::max(0L, std::strtol(ms, nullptr, 10)) : 0L;
}()};

std::chrono::milliseconds refresh_interval() {
    std::int64_t ms = g_refresh_ms.load();
    return std::chrono::milliseconds(ms > 0 ? ms : kLockRefreshSeconds * 1000);
}

std::string stale_words(const LockInfo& info) {
    return "last refreshed " + iso8601_utc(info.refreshed) + ", over " +
           std::to_string(kLockStaleSeconds / 60) + " minutes ago";
}

}  // namespace

void set_lock_refresh_interval_for_tests(std::int64_t milliseconds) {
    g_refresh_ms.store(milliseconds);
}

RepoLock::RepoLock(Env& env, std::string root, std::string id, LockMode mode, std::string operation,
                   LockLog log)
    : env_(env),
      root_(std::move(root)),
      id_(std::move(id)),
      mode_(mode),
      operation_(std::move(operation)),
      taken_(::time(nullptr)),
      log_(std::move(log)) {}

std::string RepoLock::path_of(const std::string& id) const {
    return root_ + "/" + std::string(format::kLocksDir) + "/" + id;
}

std::string RepoLock::path() const {
    std::lock_guard lock(id_mutex_);
    return path_of(id_);
}

Status RepoLock::write_file(const std::string& id) {
    nlohmann::json j{{"version", kLockVersion},
                     {"pid", ::getpid()},
                     {"start_time", process_start_time(::getpid())},
                     {"host", hostname()},
                     {"exclusive", mode_ == LockMode::exclusive},
                     {"operation", operation_},
                     {"time", iso8601_utc(taken_)},
                     {"refreshed", iso8601_utc(::time(nullptr))}};
    std::string text = j.dump();
    return write_file_atomic(env_, root_ + "/" + std::string(format::kTmpDir),
                             root_ + "/" + std::string(format::kLocksDir), id, as_bytes(text));
}

namespace {

Result<std::string> new_lock_id() {
    auto random_id = random_bytes(16);
    if (!random_id) return std::unexpected(random_id.error().with_context("lock"));
    std::string id = sha256(*random_id).hex().substr(0, 32);
    std::lock_guard lock(g_held_mutex);
    g_held.insert(id);
    return id;
}

void forget_held(const std::string& id) {
    std::lock_guard lock(g_held_mutex);
    g_held.erase(id);
}

}  // namespace

Result<std::unique_ptr<RepoLock>> RepoLock::try_acquire(Env& env, const std::string& root,
                                                        LockMode mode, const std::string& operation,
                                                        const LockLog& log) {
    auto new_id = new_lock_id();
    if (!new_id) return std::unexpected(new_id.error());
    const std::string id = *new_id;
    std::unique_ptr<RepoLock> self(new RepoLock(env, root, id, mode, operation, log));
    if (auto st = self->write_file(id); !st)
        return std::unexpected(st.error().with_context("lock"));
    std::string dir = root + "/" + std::string(format::kLocksDir);
    auto names = env.list(dir);
    if (!names) return std::unexpected(names.error());
    for (const auto& name : *names) {
        if (name == id) continue;
        auto bytes = read_file(env, dir + "/" + name);
        if (!bytes && bytes.error().kind() == ErrorKind::not_found) continue;  // released
        // Lock files are written atomically, so one that cannot be read is not a racing
        // holder's half-written file but damage or a foreign file: held until removed.
        LockInfo other = bytes ? describe(name, *bytes) : LockInfo{.id = name, .readable = false};
        judge_freshness(env, dir + "/" + name, other);
        if (!other.readable)
            return fail(ErrorKind::locked,
                        "repository is locked by " + dir + "/" + name +
                            ", a lock file vmshadow cannot read (damaged, or written by a newer "
                            "vmshadow); once you know no vmshadow process uses the repository, "
                            "remove it with `vmshadow repo unlock --remove-all`");
        if (other.holder_dead) {
            (void)env.remove(dir + "/" + name);  // its owner is gone
            continue;
        }
        if ((mode == LockMode::exclusive || other.exclusive) && other.stale)
            return fail(ErrorKind::locked,
                        "repository is locked by a stale lock " + dir + "/" + name + " of `" +
                            other.operation + "` (pid " + std::to_string(other.pid) + " on " +
                            other.host + ", " + stale_words(other) +
                            "): its holder is gone or cut off; remove it with `vmshadow repo "
                            "unlock`");
        if (mode == LockMode::exclusive || other.exclusive) {
            const std::string& host = other.host;
            return fail(ErrorKind::locked,
                        "repository is locked by `" + other.operation + "` (pid " +
                            std::to_string(other.pid) + " on " + host + ", since " + other.time +
                            "); " +
                            (other.exclusive ? "retry when it has finished"
                                             : "retry when running operations have finished") +
                            (host == hostname() ? ""
                                                : ", or, once you know that process on " + host +
                                                      " is gone, remove its lock with `vmshadow "
                                                      "repo unlock --remove-all`"));
        }
    }
    if (auto st = self->start_refresher(); !st) return std::unexpected(st.error());
    return self;
}

Result<std::unique_ptr<RepoLock>> RepoLock::acquire(Env& env, const std::string& root,
                                                    LockMode mode, const std::string& operation,
                                                    std::chrono::seconds wait, LockLog log) {
    auto deadline = std::chrono::steady_clock::now() + wait;
    auto pause = std::chrono::milliseconds(1000);
    // Each pause is drawn from [½, 1½] of the doubling step: two waiters (a backup and a
    // prune) that back off in lockstep would otherwise meet again at every attempt.
    thread_local std::mt19937 random(std::random_device{}());
    std::uniform_real_distribution<double> spread(0.5, 1.5);
    for (;;) {
        auto lock = try_acquire(env, root, mode, operation, log);
        if (lock || lock.error().kind() != ErrorKind::locked) return lock;
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline)
            return wait.count() == 0
                       ? std::move(lock)
                       : fail(ErrorKind::locked, lock.error().message() + " (waited " +
                                                     std::to_string(wait.count()) + " s for it)");
        auto jittered = std::chrono::milliseconds(
            static_cast<std::int64_t>(static_cast<double>(pause.count()) * spread(random)));
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(jittered, deadline - now));
        pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::seconds(30));
    }
}

Status RepoLock::start_refresher() {
    refresher_ = std::make_unique<Refresher>();
    refresher_->pid = ::getpid();
    try {
        refresher_->thread = std::thread([this, r = refresher_.get()] { refresh_loop(*r); });
    } catch (const std::system_error& e) {
        return fail(ErrorKind::io,
                    std::string("cannot start the lock's refresher thread: ") + e.what());
    }
    return {};
}

void RepoLock::refresh_loop(Refresher& r) {
    auto last_success = std::chrono::steady_clock::now();
    std::unique_lock lock(r.mutex);
    bool retrying = false;
    for (;;) {
        const auto every = refresh_interval();
        // The give-up time in refreshes, so that tests' short intervals scale it too.
        const auto give_up = every * kLockGiveUpSeconds / kLockRefreshSeconds;
        const auto pause = retrying ? every / 5 : every;
        if (r.cv.wait_for(lock, pause, [&r] { return r.stopping; })) return;
        lock.unlock();
        Status st = refresh();
        lock.lock();
        if (st) {
            last_success = std::chrono::steady_clock::now();
            retrying = false;
            continue;
        }
        if (is_lost_.load()) return;  // removed by another process: refresh() said so
        auto silent = std::chrono::steady_clock::now() - last_success;
        if (silent >= give_up) {
            lose(Error(ErrorKind::locked,
                       "the repository lock " + path() + " of `" + operation_ +
                           "` could not be refreshed for " +
                           std::to_string(
                               std::chrono::duration_cast<std::chrono::seconds>(silent).count()) +
                           " s (" + st.error().message() +
                           "): other hosts may take it for stale and remove it, operation "
                           "aborted"));
            return;
        }
        retrying = true;
        if (log_)
            log_("warning: cannot refresh the repository lock " + path() + " of `" + operation_ +
                 "` (" + st.error().message() + "); retrying in " +
                 std::to_string(
                     std::chrono::duration_cast<std::chrono::milliseconds>(every / 5).count()) +
                 " ms");
    }
}

void RepoLock::lose(const Error& why) {
    {
        std::lock_guard lock(lost_mutex_);
        if (lost_) return;
        lost_ = why;
        is_lost_.store(true);
    }
    std::lock_guard lock(callback_mutex_);
    notify_lost();
}

Status RepoLock::held() const {
    if (!is_lost_.load()) return {};
    std::lock_guard lock(lost_mutex_);
    return std::unexpected(*lost_);
}

Status RepoLock::verify() {
    std::lock_guard write(write_mutex_);  // not while a refresh replaces the object
    if (auto st = held(); !st) return st;
    const std::string now = path();
    auto there = env_.modified_time(now);
    if (there) return {};
    if (there.error().kind() != ErrorKind::not_found)
        return std::unexpected(there.error().with_context("checking the repository lock"));
    lose(removed_error(now));
    return held();
}

Error RepoLock::removed_error(const std::string& path) const {
    return Error(ErrorKind::locked, "lock was removed by another process, operation aborted: " +
                                        path + " of `" + operation_ +
                                        "` is gone (`vmshadow repo unlock --remove-all` on "
                                        "another host?); run the operation again");
}

void RepoLock::on_lost(std::function<void(const Error&)> callback) {
    std::lock_guard lock(callback_mutex_);
    on_lost_ = std::move(callback);
    if (on_lost_) notify_lost();
}

void RepoLock::notify_lost() {
    std::optional<Error> why;
    {
        std::lock_guard lock(lost_mutex_);
        why = lost_;
    }
    if (!why || notified_ || !on_lost_) return;
    notified_ = true;
    on_lost_(*why);
}

void RepoLock::stop_refresher() {
    if (!refresher_) return;
    if (::getpid() != refresher_->pid) {
        // A forked child's copy (see lock.h): its thread is not here. Left behind on purpose.
        (void)refresher_.release();
        return;
    }
    {
        std::lock_guard lock(refresher_->mutex);
        refresher_->stopping = true;
    }
    refresher_->cv.notify_all();
    if (refresher_->thread.joinable()) refresher_->thread.join();
    refresher_.reset();
}

// A refresh stores the lock under a new name, then asks whether the old one is still there,
// and only then removes it (restic's order). Rewriting one object would let a refresh whose
// write waits (behind uploads, under a bandwidth cap) land after a removal and undo it unseen;
// a new name cannot bring back the old one, and a removal before the question is seen.
Status RepoLock::refresh() {
    std::lock_guard write(write_mutex_);
    if (auto st = held(); !st) return st;
    const std::string old_path = path();
    auto new_id = new_lock_id();
    if (!new_id) return std::unexpected(new_id.error());
    auto drop_new = [&] {
        (void)env_.remove(path_of(*new_id));
        forget_held(*new_id);
    };
    if (auto st = write_file(*new_id); !st) {
        drop_new();
        return st;
    }
    auto there = env_.modified_time(old_path);
    if (!there) {
        drop_new();  // never kept once the old one is gone: whoever removed it may run gc now
        if (there.error().kind() != ErrorKind::not_found) return std::unexpected(there.error());
        lose(removed_error(old_path));
        return held();
    }
    std::string old_id;
    {
        std::lock_guard lock(id_mutex_);
        old_id = std::exchange(id_, *new_id);
    }
    // One left behind is this process's and no longer held: stale, removed by the next locker.
    if (auto st = env_.remove(old_path); !st && log_)
        log_("warning: cannot remove the previous repository lock " + old_path + " (" +
             st.error().message() + ")");
    forget_held(old_id);
    return {};
}

Status RepoLock::downgrade() {
    {
        std::lock_guard lock(write_mutex_);
        mode_ = LockMode::shared;
    }
    return refresh();  // a lock removed meanwhile is lost, not written again
}

Status RepoLock::release() {
    if (!held_) return {};
    held_ = false;
    stop_refresher();
    Status st = env_.remove(path());
    forget_held(id_);
    return st;
}

RepoLock::~RepoLock() {
    (void)release();
}

Result<std::vector<LockInfo>> list_locks(Env& env, const std::string& root) {
    std::string dir = root + "/" + std::string(format::kLocksDir);
    auto names = env.list(dir);
    if (!names) return std::unexpected(names.error());
    std::vector<LockInfo> out;
    for (const auto& name : *names) {
        auto bytes = read_file(env, dir + "/" + name);
        if (!bytes && bytes.error().kind() == ErrorKind::not_found) continue;  // released
        // One that can't be read at all (permissions, a directory) is unreadable like garbage:
        // held, and --remove-all removes it.
        out.push_back(bytes ? describe(name, *bytes) : LockInfo{.id = name, .readable = false});
        judge_freshness(env, dir + "/" + name, out.back());
    }
    std::stable_sort(out.begin(), out.end(), [](const LockInfo& a, const LockInfo& b) {
        return a.since != b.since ? a.since < b.since : a.id < b.id;
    });
    return out;
}

Result<std::vector<LockInfo>> remove_locks(Env& env, const std::string& root, bool remove_all) {
    auto locks = list_locks(env, root);
    if (!locks) return std::unexpected(locks.error());
    std::string dir = root + "/" + std::string(format::kLocksDir);
    std::vector<LockInfo> removed;
    auto remove = [&](LockInfo& lock) -> Status {
        std::string path = dir + "/" + lock.id;
        if (!env.exists(path)) return {};  // its holder released it, or acquire() broke it
        if (auto st = env.remove(path); !st)
            return std::unexpected(st.error().with_context("removing lock " + lock.id));
        removed.push_back(std::move(lock));
        return {};
    };
    std::set<std::pair<std::string, long>> holders;  // whose live locks were removed
    std::set<std::string> seen;
    for (auto& lock : *locks) {
        seen.insert(lock.id);
        if (!remove_all && !lock.holder_dead && !lock.stale) continue;
        if (remove_all && lock.readable) holders.emplace(lock.host, lock.pid);
        if (auto st = remove(lock); !st) return std::unexpected(st.error());
    }
    // A holder refreshing right then stored its lock under a new name before it found the old
    // one gone, or just before we removed it: that one goes too (its holder will find it gone).
    if (!holders.empty()) {
        auto again = list_locks(env, root);
        if (!again) return std::unexpected(again.error());
        for (auto& lock : *again)
            if (!seen.contains(lock.id) && lock.readable && holders.contains({lock.host, lock.pid}))
                if (auto st = remove(lock); !st) return std::unexpected(st.error());
    }
    if (!removed.empty())
        if (auto st = env.sync_dir(dir); !st) return std::unexpected(st.error());
    return removed;
}

}  // namespace vmshadow::repo
