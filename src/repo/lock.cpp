// SPDX-License-Identifier: MIT
#include "repo/lock.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

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

// Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot. With the
// pid it identifies a process across pid reuse.
std::string start_time(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = s.rfind(')');
    if (close == std::string::npos) return "";
    std::istringstream rest(s.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i) {
    }
    return field;
}

bool held_here(const std::string& id) {
    std::lock_guard lock(g_held_mutex);
    return g_held.contains(id);
}

bool is_stale(const nlohmann::json& j, const std::string& id) {
    if (j.value("host", "") != hostname()) return false;
    pid_t pid = j.value("pid", 0);
    if (pid <= 0) return true;
    if (pid == ::getpid()) return !held_here(id);
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    return start_time(pid) != j.value("start_time", "");
}

// "2026-11-22T01:00:00Z" as Unix seconds; 0 when it is something else.
std::int64_t parse_iso8601_utc(const std::string& text) {
    std::tm tm{};
    const char* end = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end != '\0') return 0;
    return static_cast<std::int64_t>(::timegm(&tm));
}

LockInfo describe(const std::string& id, const Bytes& bytes) {
    LockInfo info;
    info.id = id;
    nlohmann::json j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        info.readable = false;
        return info;
    }
    try {
        info.host = j.value("host", "");
        info.pid = j.value("pid", 0L);
        info.exclusive = j.value("exclusive", false);
        info.operation = j.value("operation", "");
        info.time = j.value("time", "");
        info.since = parse_iso8601_utc(info.time);
        info.holder_dead = is_stale(j, id);
    } catch (const nlohmann::json::exception&) {
        info.readable = false;  // a field of the wrong type
    }
    return info;
}

}  // namespace

RepoLock::RepoLock(Env& env, std::string root, std::string id, LockMode mode, std::string operation)
    : env_(env),
      root_(std::move(root)),
      id_(std::move(id)),
      mode_(mode),
      operation_(std::move(operation)) {}

Status RepoLock::write_file() {
    nlohmann::json j{{"pid", ::getpid()},       {"start_time", start_time(::getpid())},
                     {"host", hostname()},      {"exclusive", mode_ == LockMode::exclusive},
                     {"operation", operation_}, {"time", iso8601_utc(::time(nullptr))}};
    std::string text = j.dump();
    return write_file_atomic(env_, root_ + "/" + std::string(format::kTmpDir),
                             root_ + "/" + std::string(format::kLocksDir), id_, as_bytes(text));
}

Result<std::unique_ptr<RepoLock>> RepoLock::acquire(Env& env, const std::string& root,
                                                    LockMode mode, const std::string& operation) {
    std::string id = sha256(random_bytes(16)).hex().substr(0, 32);
    {
        std::lock_guard lock(g_held_mutex);
        g_held.insert(id);
    }
    std::unique_ptr<RepoLock> self(new RepoLock(env, root, id, mode, operation));
    if (auto st = self->write_file(); !st) return std::unexpected(st.error().with_context("lock"));
    std::string dir = root + "/" + std::string(format::kLocksDir);
    auto names = env.list(dir);
    if (!names) return std::unexpected(names.error());
    for (const auto& name : *names) {
        if (name == id) continue;
        auto bytes = read_file(env, dir + "/" + name);
        if (!bytes) continue;  // removed meanwhile
        nlohmann::json j = nlohmann::json::parse(bytes->begin(), bytes->end(), nullptr, false);
        if (j.is_discarded() || !j.is_object()) continue;  // half-written by a racing holder
        if (is_stale(j, name)) {
            (void)env.remove(dir + "/" + name);  // its owner is gone
            continue;
        }
        bool other_exclusive = j.value("exclusive", false);
        if (mode == LockMode::exclusive || other_exclusive) {
            std::string host = j.value("host", "?");
            return fail(ErrorKind::locked,
                        "repository is locked by `" + j.value("operation", "?") + "` (pid " +
                            std::to_string(j.value("pid", 0)) + " on " + host + ", since " +
                            j.value("time", "?") + "); " +
                            (other_exclusive ? "retry when it has finished"
                                             : "retry when running operations have finished") +
                            (host == hostname() ? ""
                                                : ", or, once you know that process on " + host +
                                                      " is gone, remove its lock with `vmshadow "
                                                      "repo unlock --remove-all`"));
        }
    }
    return self;
}

Status RepoLock::downgrade() {
    mode_ = LockMode::shared;
    return write_file();
}

Status RepoLock::release() {
    if (!held_) return {};
    held_ = false;
    Status st = env_.remove(root_ + "/" + std::string(format::kLocksDir) + "/" + id_);
    std::lock_guard lock(g_held_mutex);
    g_held.erase(id_);
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
        if (!bytes) {
            if (bytes.error().kind() == ErrorKind::not_found) continue;  // released meanwhile
            return std::unexpected(bytes.error());
        }
        out.push_back(describe(name, *bytes));
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
    for (auto& lock : *locks) {
        if (!remove_all && !lock.holder_dead) continue;
        std::string path = dir + "/" + lock.id;
        if (!env.exists(path)) continue;  // its holder released it, or acquire() broke it
        if (auto st = env.remove(path); !st)
            return std::unexpected(st.error().with_context("removing lock " + lock.id));
        removed.push_back(std::move(lock));
    }
    if (!removed.empty())
        if (auto st = env.sync_dir(dir); !st) return std::unexpected(st.error());
    return removed;
}

}  // namespace vmshadow::repo
