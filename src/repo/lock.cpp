// SPDX-License-Identifier: MIT
#include "repo/lock.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
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
            return fail(ErrorKind::locked,
                        "repository is locked by `" + j.value("operation", "?") + "` (pid " +
                            std::to_string(j.value("pid", 0)) + " on " + j.value("host", "?") +
                            ", since " + j.value("time", "?") + "); " +
                            (other_exclusive ? "retry when it has finished"
                                             : "retry when running operations have finished"));
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

}  // namespace vmshadow::repo
