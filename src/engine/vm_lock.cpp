// SPDX-License-Identifier: MIT
#include "engine/vm_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/os_error.h"
#include "common/process.h"
#include "common/time_format.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

// A VM name may hold any character but '/': file names keep [A-Za-z0-9._-] and escape the rest.
std::string file_key(const std::string& kind, const std::string& value) {
    std::string out = kind + "-";
    for (unsigned char c : value) {
        if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
            out += static_cast<char>(c);
        } else {
            char hex[4];
            std::snprintf(hex, sizeof hex, "%%%02X", c);
            out += hex;
        }
    }
    return out + ".lock";
}

std::string read_fd(int fd) {
    std::string text;
    char buf[512];
    for (off_t at = 0;;) {
        ssize_t n = ::pread(fd, buf, sizeof buf, at);
        if (n <= 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        at += n;
    }
    return text;
}

// The holder's own words, or nothing while a fresh winner has not written them yet (or the
// file names a process that is gone: a winner that has not overwritten its predecessor).
std::string describe_holder(int fd) {
    for (int i = 0; i < 20; ++i, std::this_thread::sleep_for(std::chrono::milliseconds(50))) {
        auto j = nlohmann::json::parse(read_fd(fd), nullptr, false);
        if (j.is_discarded() || !j.is_object()) continue;
        try {  // value() throws on a field of the wrong type: a half-written file, read again
            ProcessId holder{j.value("pid", -1), j.value("start_time", "")};
            if (!process_alive(holder)) continue;
            return "pid " + std::to_string(holder.pid) + ", " + j.value("operation", "?") +
                   " of VM '" + j.value("vm", "?") + "', since " + j.value("since", "?");
        } catch (const nlohmann::json::exception&) {
            continue;
        }
    }
    return "";
}

}  // namespace

Result<VmLock> VmLock::acquire(const std::vector<VmLockKey>& vms, const std::string& operation,
                               const fs::path& dir_arg) {
    fs::path dir = dir_arg;
    if (dir.empty()) {
        const char* env = std::getenv("VMSHADOW_VM_LOCK_DIR");
        dir = env && *env ? fs::path(env) : fs::path(kDefaultVmLockDir);
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return fail(os_error("create the VM lock directory " + dir.string(), ec));
    VmLock lock;
    std::set<fs::path> taken;  // a key twice would conflict with itself: flock is per open
    for (const auto& vm : vms) {
        std::vector<fs::path> files{dir / file_key("name", vm.vm)};
        if (!vm.uuid.empty()) files.push_back(dir / file_key("uuid", vm.uuid));
        for (const auto& file : files) {
            if (!taken.insert(file).second) continue;
            UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
            if (!fd) return fail(os_error("open the VM lock " + file.string(), errno));
            if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
                if (errno != EWOULDBLOCK) return fail(os_error("lock " + file.string(), errno));
                std::string holder = describe_holder(fd.get());
                return fail(ErrorKind::conflict,
                            "vm '" + vm.vm + "': another vmshadow process is working on it (" +
                                (holder.empty() ? "it holds " + file.string() : holder) + "): " +
                                operation + " refused; wait until it ends, or stop that process");
            }
            nlohmann::json who{
                {"pid", ::getpid()},      {"start_time", process_start_time(::getpid())},
                {"operation", operation}, {"vm", vm.vm},
                {"uuid", vm.uuid},        {"since", iso8601_utc(std::time(nullptr))}};
            std::string text = who.dump() + "\n";
            // Written in place under the lock; a reader that sees a half-written file retries.
            if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), text.data(), text.size(), 0) !=
                                                     static_cast<ssize_t>(text.size()))
                return fail(os_error("write the VM lock " + file.string(), errno));
            lock.fds_.push_back(std::move(fd));
        }
    }
    return lock;
}

}  // namespace vmshadow::engine
