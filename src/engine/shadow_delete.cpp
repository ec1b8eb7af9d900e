// SPDX-License-Identifier: MIT
// `shadow delete`, `shadow list` and the sweep every shadow command starts with
// (shadow_ops.h).
#include <algorithm>
#include <chrono>
#include <ctime>
#include <optional>

#include "common/byte_size.h"
#include "common/os_error.h"
#include "common/process.h"
#include "common/time_format.h"
#include "engine/shadow_detail.h"
#include "engine/shadow_ops.h"
#include "virt/connection.h"
#include "virt/shadow_job.h"

namespace vmshadow::engine {
namespace fs = std::filesystem;

namespace {

Status unmount(const ShadowMountRecord& m) {
    std::error_code ec;
    if (fs::is_symlink(m.link, ec)) fs::remove(m.link, ec);
    if (fs::exists(m.mount, ec)) {
        auto r = run_tool({"fusermount3", "-u", m.mount});
        if (r && r->exit_code != 0) (void)run_tool({"fusermount3", "-u", "-z", m.mount});
    }
    if (m.nbdfuse.pid > 0) {
        if (auto st = stop_process(m.nbdfuse, std::chrono::seconds(5)); !st)
            return fail(st.error().with_context("stop the nbdfuse of " + m.link));
    }
    return {};
}

void keep_first(Status& result, Status st) {
    if (!st && result) result = std::move(st);
}

}  // namespace

Status discard_shadow(const ShadowSettings& settings, const ShadowRecord& record) {
    Status result;
    if (record.watcher.pid > 0)
        keep_first(result, stop_process(record.watcher, std::chrono::seconds(5)));
    for (const auto& m : record.mounts) keep_first(result, unmount(m));
    if (record.active()) {
        auto conn = virt::Connection::open(record.connect_uri.empty() ? settings.connect_uri
                                                                      : record.connect_uri);
        std::optional<virt::Domain> domain;
        if (conn) {
            if (auto d = conn->lookup(record.uuid)) domain.emplace(std::move(*d));
        }
        if (domain) {
            auto aborted = virt::abort_shadow_job(*domain, record.socket);
            if (!aborted) keep_first(result, fail(aborted.error()));
        } else if (!conn) {
            keep_first(result, fail(conn.error()));
        }
    }
    std::error_code ec;
    for (const auto& f : record.scratch_files()) fs::remove(f, ec);
    fs::remove_all(virt::shadow_socket_dir(settings.shadow_dir, record.id), ec);
    if (result) keep_first(result, remove_shadow_record(settings.shadow_dir, record.id));
    return result;
}

std::uint64_t shadow_diff_used(const ShadowRecord& record, const virt::Domain* domain) {
    std::uint64_t used = virt::scratch_allocated(record.scratch_files());
    if (domain) {
        auto status = virt::shadow_job_status(*domain, record.socket);
        if (status && status->running) used = std::max(used, status->temp_used);
    }
    return used;
}

ShadowNotes sweep_shadows(const ShadowSettings& settings) {
    return sweep_shadows(settings, static_cast<std::int64_t>(std::time(nullptr)));
}

ShadowNotes sweep_shadows(const ShadowSettings& settings, std::int64_t now) {
    ShadowNotes notes;
    std::vector<std::string> bad;
    auto records = load_shadows(settings.shadow_dir, &bad);
    if (!records) return {records.error().message()};
    for (auto& b : bad) notes.push_back("ignored " + b);
    for (const auto& r : *records) {
        if (dropped_shadow_expired(r, now)) {
            auto st = discard_shadow(settings, r);
            notes.push_back("the record of shadow " + r.id + " of vm '" + r.vm +
                            "' was removed: it was dropped more than 7 days ago" +
                            (r.dropped_at != 0 ? " (" + iso8601_utc(r.dropped_at) + ")" : "") +
                            (r.dropped_why.empty() ? "" : ": " + r.dropped_why) +
                            (st ? "" : "; cleaning up: " + st.error().message()));
            continue;
        }
        if (!r.active() || r.watcher.alive()) continue;
        std::string who = r.watcher.pid > 0
                              ? "its watcher (pid " + std::to_string(r.watcher.pid) + ") is gone"
                              : "the command creating it died before its watcher started";
        auto st = discard_shadow(settings, r);
        notes.push_back("shadow " + r.id + " of vm '" + r.vm + "' was deleted: " + who +
                        " (killed, or the host restarted), so its diff area could no longer "
                        "be bounded" +
                        (st ? "" : "; cleaning up: " + st.error().message()));
    }
    return notes;
}

Result<ShadowList> list_shadows(const ShadowSettings& settings) {
    auto lock = ShadowDirLock::acquire(settings.shadow_dir);
    if (!lock) return fail(lock.error());
    ShadowList list;
    list.notes = sweep_shadows(settings);
    auto records = load_shadows(settings.shadow_dir);
    if (!records) return fail(records.error());
    std::optional<virt::Connection> conn;
    for (auto& r : *records) {
        ShadowListEntry e;
        if (r.active()) {
            if (!conn) {
                if (auto c = virt::Connection::open(settings.connect_uri))
                    conn.emplace(std::move(*c));
            }
            std::optional<virt::Domain> domain;
            if (conn) {
                if (auto d = conn->lookup(r.uuid)) domain.emplace(std::move(*d));
            }
            e.diff_used = shadow_diff_used(r, domain ? &*domain : nullptr);
        }
        e.record = std::move(r);
        list.shadows.push_back(std::move(e));
    }
    return list;
}

Result<ShadowDeleted> delete_shadows(const ShadowSettings& settings, const std::string& id) {
    auto lock = ShadowDirLock::acquire(settings.shadow_dir);
    if (!lock) return fail(lock.error());
    ShadowDeleted deleted;
    deleted.notes = sweep_shadows(settings);
    std::vector<ShadowRecord> targets;
    if (id.empty()) {
        auto records = load_shadows(settings.shadow_dir);
        if (!records) return fail(records.error());
        targets = std::move(*records);
    } else {
        auto record = load_shadow(settings.shadow_dir, id);
        if (!record) {
            // The sweep may just have deleted it: say so rather than "no such shadow".
            for (const auto& n : deleted.notes) {
                if (n.starts_with("shadow " + id + " ")) return deleted;
            }
            return fail(record.error());
        }
        targets.push_back(std::move(*record));
    }
    for (const auto& r : targets) {
        if (auto st = discard_shadow(settings, r); !st)
            return fail(st.error().with_context("delete shadow " + r.id));
        deleted.ids.push_back(r.id);
    }
    return deleted;
}

}  // namespace vmshadow::engine
