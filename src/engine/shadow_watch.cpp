// SPDX-License-Identifier: MIT
// The shadow's watcher (shadow_ops.h): a detached process that drops the shadow before its
// diff area passes the maximum, so the guest never sees a write error.
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/atomic_file.h"
#include "common/byte_size.h"
#include "engine/shadow_detail.h"
#include "engine/shadow_ops.h"
#include "virt/connection.h"
#include "virt/shadow_job.h"

namespace vmshadow::engine {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr auto kPoll = 50ms;
// A scratch filesystem with less free space than this drops the shadow: QEMU fails a
// copy-before-write that finds no room, and the guest would see that as a write error.
constexpr std::uint64_t kScratchReserve = 64ull << 20;
// libvirt unreadable for this long: the shadow cannot be watched, so it is dropped.
constexpr auto kBlindLimit = 5s;

std::uint64_t free_space(const fs::path& file) {
    struct statvfs vfs {};
    if (::statvfs(file.parent_path().c_str(), &vfs) != 0) return UINT64_MAX;
    return static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

void log_line(const std::string& line) {
    std::cerr << line << std::endl;
}

// Records the drop (the job is gone by now) and removes the diff area. The record is
// re-read: `shadow delete` may have removed it meanwhile, and then nothing is written.
void record_drop(const ShadowSettings& settings, const std::string& id, const std::string& why) {
    log_line("dropped: " + why);
    auto record = load_shadow(settings.shadow_dir, id);
    if (!record || !record->active()) return;
    record->state = "dropped";
    record->dropped_why = why;
    record->dropped_at = static_cast<std::int64_t>(std::time(nullptr));
    std::error_code ec;
    for (const auto& f : record->scratch_files()) fs::remove(f, ec);
    (void)save_shadow(settings.shadow_dir, *record);
}

void drop(const ShadowSettings& settings, const virt::Domain& domain, const ShadowRecord& record,
          const std::string& why) {
    auto aborted = virt::abort_shadow_job(domain, record.socket);
    if (!aborted) log_line("abort failed: " + aborted.error().message());
    record_drop(settings, record.id, why);
}

}  // namespace

std::uint64_t shadow_drop_point(std::uint64_t max_size) {
    std::uint64_t margin = std::min<std::uint64_t>(max_size / 4, 512ull << 20);
    return max_size - margin;
}

int run_shadow_watcher(const ShadowSettings& settings, const std::string& id) {
    auto first = load_shadow(settings.shadow_dir, id);
    if (!first) {
        log_line(first.error().message());
        return 1;
    }
    const ShadowRecord record = *first;
    auto conn = virt::Connection::open(settings.connect_uri.empty() ? record.connect_uri
                                                                    : settings.connect_uri);
    if (!conn) {
        log_line(conn.error().message());
        return 1;
    }
    auto domain = conn->lookup(record.uuid);
    if (!domain) {
        log_line(domain.error().message());
        return 1;
    }
    // Ready: start_daemon waits for this file naming us.
    fs::path pidfile = fs::path(record.socket).parent_path() / "watcher.pid";
    if (!write_file_atomically(pidfile, std::to_string(::getpid()) + "\n")) return 1;

    const std::uint64_t drop_point = shadow_drop_point(record.max_size);
    const auto scratch = record.scratch_files();
    auto blind_since = std::chrono::steady_clock::time_point::max();
    log_line("watching shadow " + id + ": drop at " + format_bytes(drop_point) + " of " +
             format_bytes(record.max_size));
    while (true) {
        auto now = load_shadow(settings.shadow_dir, id);
        if (!now || !now->active()) return 0;  // deleted (or dropped): nothing left to watch
        auto status = virt::shadow_job_status(*domain, record.socket);
        if (!status) {
            auto t = std::chrono::steady_clock::now();
            if (blind_since == std::chrono::steady_clock::time_point::max()) blind_since = t;
            if (t - blind_since > kBlindLimit) {
                drop(settings, *domain, record,
                     "its watcher could not read the VM's job for 5 s (" +
                         status.error().message() + ")");
                return 0;
            }
            std::this_thread::sleep_for(kPoll);
            continue;
        }
        blind_since = std::chrono::steady_clock::time_point::max();
        if (!status->running) {
            record_drop(settings, id,
                        "the VM's backup job ended without `shadow delete` (the VM stopped or "
                        "was restarted, or another tool aborted it)");
            return 0;
        }
        std::uint64_t used = std::max(status->temp_used, virt::scratch_allocated(scratch));
        if (used >= drop_point) {
            drop(settings, *domain, record,
                 "the diff area reached its maximum of " + format_bytes(record.max_size) + " (" +
                     format_bytes(used) + " used)");
            return 0;
        }
        if (!scratch.empty() && free_space(scratch.front()) < kScratchReserve) {
            drop(settings, *domain, record,
                 "the scratch filesystem of " + scratch.front().parent_path().string() +
                     " ran low on space (less than " + format_bytes(kScratchReserve) + " free)");
            return 0;
        }
        std::this_thread::sleep_for(kPoll);
    }
}

}  // namespace vmshadow::engine
