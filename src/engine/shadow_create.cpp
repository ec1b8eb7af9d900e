// SPDX-License-Identifier: MIT
// `shadow create` (shadow_ops.h): the job begun inside an agent freeze when the guest can
// freeze, the watcher started, the disks exposed as files on request.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>

#include "common/byte_size.h"
#include "common/os_error.h"
#include "common/process.h"
#include "common/test_hook.h"
#include "engine/shadow_detail.h"
#include "engine/shadow_ops.h"
#include "engine/snapshot_run.h"
#include "engine/vm_lock.h"
#include "virt/connection.h"
#include "virt/freeze_guard.h"
#include "virt/shadow_job.h"
#include "virt/thaw_guardian.h"

namespace vmshadow::engine {
namespace fs = std::filesystem;

namespace {

struct Begun {
    std::string consistency;
    std::string reason;
};

// Begins the job inside an agent freeze when the guest can freeze; otherwise (and when the
// freeze window broke) the shadow is crash-consistent, and the reason says why.
Result<Begun> begin_frozen(const virt::Domain& domain, const virt::ShadowJobPlan& plan,
                           const std::string& connect_uri) {
    virt::FreezeSettings fs_settings;
    fs_settings.connect_uri = connect_uri;
    Begun begun{"crash", ""};
    auto guard = virt::FreezeGuard::freeze(domain, fs_settings);
    if (!guard) {
        begun.reason = "the guest agent could not freeze the guest: " + guard.error().message();
        if (auto st = virt::begin_shadow_job(domain, plan); !st) return fail(st.error());
        return begun;
    }
    Status started = virt::begin_shadow_job(domain, plan);
    auto thawed = guard->thaw();
    if (!started) return fail(started.error());
    if (!thawed) {
        begun.reason = "the thaw after the freeze failed (" + thawed.error().message() +
                       "), so the freeze may not have held";
    } else if (thawed->window_broken()) {
        begun.reason = "the thaw guardian thawed the guest before the shadow began";
    } else if (thawed->frozen == 0) {
        begun.reason = "the guest agent froze no filesystem";
    } else {
        begun.consistency = "application";
        begun.reason = "the guest agent froze " + std::to_string(thawed->frozen) +
                       " filesystem(s) for " + std::to_string(thawed->window.count()) + " ms";
    }
    return begun;
}

// The diff area's maximum: the user's, never more than 90 % of the scratch filesystem's free
// space (past that the guest would see write errors before the watcher could act).
Result<std::uint64_t> choose_max_size(std::uint64_t asked, const fs::path& scratch_dir,
                                      ShadowNotes& notes) {
    std::error_code ec;
    fs::create_directories(scratch_dir, ec);
    std::uint64_t room = default_scratch_limit(scratch_dir.string());
    if (room == 0)
        return fail(ErrorKind::io, "cannot tell the free space of the scratch directory " +
                                       scratch_dir.string() + " (does it exist?)");
    if (asked == 0) return room;
    if (asked > room) {
        notes.push_back("the diff area's maximum was lowered from " + format_bytes(asked) + " to " +
                        format_bytes(room) + ": 90% of the free space in " + scratch_dir.string());
        return room;
    }
    return asked;
}

Status start_watcher(const ShadowSettings& settings, ShadowRecord& record) {
    fs::path dir = fs::path(record.socket).parent_path();
    DaemonOptions watcher;
    std::string exe =
        settings.executable.empty() ? virt::current_executable() : settings.executable;
    watcher.argv = {exe, kShadowWatchCommand, record.id};
    if (!settings.connect_uri.empty()) {
        watcher.argv.push_back("--connect");
        watcher.argv.push_back(settings.connect_uri);
    }
    watcher.env = {"VMSHADOW_SHADOW_DIR=" + settings.shadow_dir.string()};
    watcher.log = (dir / "watcher.log").string();
    watcher.pidfile = (dir / "watcher.pid").string();
    watcher.timeout = std::chrono::seconds(30);
    watcher.record = [&](const ProcessId& id) {
        record.watcher = id;
        return save_shadow(settings.shadow_dir, record);
    };
    auto started = start_daemon(watcher);
    if (!started) return fail(started.error().with_context("start the shadow's watcher"));
    return {};
}

Status mount_disks(const ShadowSettings& settings, const std::string& mount_dir,
                   ShadowRecord& record) {
    std::error_code ec;
    fs::path dir = fs::absolute(mount_dir, ec);
    if (!fs::is_directory(dir, ec))
        return fail(ErrorKind::not_found,
                    "--mount " + mount_dir + ": not a directory (create it first)");
    fs::path socket_dir = fs::path(record.socket).parent_path();
    for (const auto& disk : record.disks) {
        fs::path link = dir / disk.target;
        if (fs::symlink_status(link, ec).type() != fs::file_type::not_found)
            return fail(ErrorKind::conflict, "--mount " + mount_dir + ": " + link.string() +
                                                 " exists already: choose an empty folder");
        fs::path mount = socket_dir / ("fuse-" + disk.target);
        if (::mkdir(mount.c_str(), 0700) != 0)
            return fail(os_error("create " + mount.string(), errno));
        DaemonOptions fuse;
        fuse.argv = {"nbdfuse",
                     "-r",
                     "-P",
                     (socket_dir / ("nbdfuse-" + disk.target + ".pid")).string(),
                     (mount / disk.target).string(),
                     record.nbd_uri(disk)};
        fuse.log = (socket_dir / ("nbdfuse-" + disk.target + ".log")).string();
        fuse.pidfile = (socket_dir / ("nbdfuse-" + disk.target + ".pid")).string();
        ShadowMountRecord m{disk.target, link.string(), mount.string(), {}};
        record.mounts.push_back(m);
        fuse.record = [&](const ProcessId& id) {
            record.mounts.back().nbdfuse = id;
            return save_shadow(settings.shadow_dir, record);
        };
        auto started = start_daemon(fuse);
        if (!started) return fail(started.error().with_context("expose disk " + disk.target));
        record.mounts.back().nbdfuse = *started;
        fs::create_symlink(mount / disk.target, link, ec);
        if (ec) return fail(os_error("create " + link.string(), ec));
        if (auto st = save_shadow(settings.shadow_dir, record); !st) return st;
    }
    return {};
}

Result<ShadowRecord> begin_shadow(const ShadowSettings& settings,
                                  const ShadowCreateRequest& request, virt::Connection& conn,
                                  const virt::Domain& domain, std::uint64_t max_size) {
    std::vector<std::string> disks = request.disks;
    if (disks.empty()) {
        auto all = virt::shadowable_disks(domain);
        if (!all) return fail(all.error());
        disks = *all;
        if (disks.empty())
            return fail(ErrorKind::invalid_argument,
                        domain.label() + " has no disk a shadow copy can cover");
    }
    ShadowRecord record;
    record.id = new_shadow_id();
    while (fs::exists(shadow_record_path(settings.shadow_dir, record.id)))
        record.id = new_shadow_id();
    auto plan = virt::prepare_shadow_job(domain, record.id, disks, settings.scratch_dir,
                                         settings.shadow_dir);
    if (!plan) return fail(plan.error());
    record.vm = domain.name();
    record.uuid = domain.uuid();
    record.connect_uri = conn.uri();
    record.created = static_cast<std::int64_t>(std::time(nullptr));
    record.max_size = max_size;
    record.socket = plan->socket.string();
    for (const auto& d : plan->disks)
        record.disks.push_back({d.target, d.export_name, d.size, d.scratch.string()});
    // Recorded before the job begins: a process killed from here on leaves a record whose
    // watcher is gone, which the next shadow command deletes, job and scratch included.
    if (auto st = save_shadow(settings.shadow_dir, record); !st) {
        (void)discard_shadow(settings, record);
        return fail(st.error());
    }
    auto begun = begin_frozen(domain, *plan, conn.uri());
    if (!begun) {
        (void)discard_shadow(settings, record);
        return fail(begun.error());
    }
    test_kill_point("shadow-job-begun");
    record.consistency = begun->consistency;
    record.consistency_reason = begun->reason;
    if (auto st = virt::describe_shadow_job(domain, *plan); st) {
        for (std::size_t i = 0; i < plan->disks.size(); ++i)
            record.disks[i].export_name = plan->disks[i].export_name;
    }
    return record;
}

}  // namespace

Result<ShadowCreated> create_shadow(const ShadowSettings& settings,
                                    const ShadowCreateRequest& request) {
    auto lock = ShadowDirLock::acquire(settings.shadow_dir);
    if (!lock) return fail(lock.error());
    ShadowCreated created;
    created.notes = sweep_shadows(settings);

    auto conn = virt::Connection::open(settings.connect_uri);
    if (!conn) return fail(conn.error());
    auto domain = conn->lookup(request.vm);
    if (!domain) return fail(domain.error());
    auto state = domain->state();
    if (!state) return fail(state.error());
    if (*state != virt::DomainState::running && *state != virt::DomainState::paused)
        return fail(ErrorKind::conflict,
                    domain->label() + " is " + std::string(virt::state_name(*state)) +
                        ": a shadow copy is of a running VM (a shut-off VM's disks can be "
                        "copied as they are)");
    auto vm_lock = VmLock::acquire({{domain->name(), domain->uuid()}}, "shadow create");
    if (!vm_lock) return fail(vm_lock.error());
    auto max_size = choose_max_size(request.max_size, settings.scratch_dir, created.notes);
    if (!max_size) return fail(max_size.error());

    ShadowSettings resolved = settings;
    resolved.connect_uri = conn->uri();
    auto record = begin_shadow(resolved, request, *conn, *domain, *max_size);
    if (!record) return fail(record.error());
    Status st = start_watcher(resolved, *record);
    if (st && !request.mount_dir.empty()) st = mount_disks(resolved, request.mount_dir, *record);
    if (st) st = save_shadow(resolved.shadow_dir, *record);
    if (!st) {
        (void)discard_shadow(resolved, *record);
        return fail(st.error().with_context(domain->label() + ": shadow copy"));
    }
    created.record = std::move(*record);
    return created;
}

}  // namespace vmshadow::engine
