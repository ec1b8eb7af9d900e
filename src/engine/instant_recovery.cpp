// SPDX-License-Identifier: MIT
#include "engine/instant_recovery.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <expected>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/process.h"
#include "common/test_hook.h"
#include "engine/image_jobs.h"
#include "engine/instant_run.h"
#include "engine/nbd_image.h"
#include "engine/vm_point.h"
#include "export/point_server.h"
#include "virt/block_copy.h"
#include "virt/lifecycle.h"
#include "vmwriter/domain_rewrite.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

bool in_place_files_free(const std::vector<Placement>& placements, bool in_place) {
    if (!in_place) return true;
    for (const auto& p : placements) {
        std::error_code ec;
        if (fs::exists(p.final_path, ec)) return false;
    }
    return true;
}

// Starts the server of `d`, recording its identity in the run before nbdkit runs.
Status serve_instant_disk(const repo::Repository& repo, const VmRestoreOptions& options,
                          InstantRun& run, InstantDisk& d) {
    exporter::PointServerOptions nbdkit;
    nbdkit.repo = repo.root();
    nbdkit.point = run.point;
    nbdkit.disk = d.name;
    nbdkit.socket = d.socket;
    nbdkit.overlay = d.overlay;
    nbdkit.pidfile = d.pidfile;
    nbdkit.log = d.log;
    nbdkit.password = options.password;
    nbdkit.environment = repo::storage_environment(repo.storage_options());
    nbdkit.owner = instant_owner(run);
    nbdkit.record = [&run, &d](const ProcessId& session) {
        d.session = session;
        d.server = {};
        return run.save();
    };
    auto server = exporter::start_point_server(nbdkit);
    if (!server) return fail(server.error().with_context("disk " + d.name));
    d.server = *server;
    return run.save();
}

// Pauses the VM (nothing it wrote is lost: the overlays and the local images keep it) and fails
// the run with how to resume it.
Status stop_instant(virt::Domain& domain, const InstantRun& run, const VmRestoreOptions& options,
                    const std::string& why) {
    bool paused = static_cast<bool>(virt::suspend_domain(domain));
    (void)run.save();
    return fail(ErrorKind::unavailable,
                "instant recovery of '" + run.vm + "' stopped: " + why + ". " +
                    (paused ? "The VM is paused and keeps every write it made"
                            : "The VM could not be paused; its disk requests wait on "
                              "error") +
                    "; fix the cause and run `" + resume_command(options, run.point) +
                    "` again to continue");
}

constexpr int kCopyStarts = 10;

// One look at the copy of `d`: its server checked, the copy started again if it stopped,
// progress reported, the disk pivoted once in sync. true: pivoted; the error says why the run
// stops.
std::expected<bool, std::string> advance_copy(virt::Domain& domain, const InstantRun& run,
                                              InstantDisk& d, const VmRestoreOptions& options,
                                              int& copy_starts) {
    if (!process_alive(d.server)) {
        std::string last = last_line_in_file(d.log);
        return std::unexpected("disk " + d.name + ": its NBD server (nbdkit) is gone" +
                               (last.empty() ? "" : " (last log line: " + last + ")") + "; log " +
                               d.log);
    }
    auto progress = virt::block_job_progress(domain, d.name);
    if (!progress) return std::unexpected(progress.error().message());
    if (!progress->running) {
        // Not there (a resumed run) or failed: its first reads after a server restart
        // fail while QEMU reconnects in the background, so try again, a few times.
        if (++copy_starts > kCopyStarts)
            return std::unexpected("disk " + d.name + ": the copy stopped before it finished (" +
                                   std::to_string(kCopyStarts) + " starts; see " + d.log + ")");
        if (copy_starts > 1) std::this_thread::sleep_for(std::chrono::seconds(1));
        if (auto st = virt::start_block_copy(domain, d.name, d.final_path, "qcow2",
                                             options.copy_bandwidth);
            !st)
            return std::unexpected(st.error().message());
        return false;
    }
    test_kill_point("instant-copying");
    if (options.task) {
        if (options.task->snapshot().item != d.name)
            options.task->phase("copy", progress->end, 0, d.name);
        options.task->set_bytes_total(progress->end);
        options.task->bytes_done(progress->cur);
    }
    if (progress->in_sync() && virt::pivot_block_copy(domain, d.name)) {
        d.pivoted = true;
        (void)run.save();
        return true;
    }
    return false;
}

// Waits until every copy is in sync and pivots each disk to its local image, then makes the
// VM persistent and stops the servers. A server that dies or a copy that stops pauses the VM
// (nothing it wrote is lost: the overlays and the local images keep it) and fails with how to
// resume; everything is left as it is for that.
Status finish_instant(const virt::Connection& connection, virt::Domain& domain, InstantRun& run,
                      const VmRestoreOptions& options) {
    std::map<std::string, int> copy_starts;
    bool io_errors = false;
    std::chrono::steady_clock::time_point io_errors_since{};
    while (true) {
        if (options.task && options.task->cancel().requested()) {
            (void)run.save();
            return fail(ErrorKind::cancelled,
                        "instant recovery of '" + run.vm +
                            "' cancelled during its copy: the VM runs on its exports and keeps "
                            "every write; run `" +
                            resume_command(options, run.point) + "` again to finish it");
        }
        bool all = true;
        for (auto& d : run.disks) {
            if (d.pivoted) continue;
            auto pivoted = advance_copy(domain, run, d, options, copy_starts[d.name]);
            if (!pivoted) return stop_instant(domain, run, options, pivoted.error());
            if (!*pivoted) all = false;
        }
        if (all) break;
        // A request that failed while a server was restarting paused the VM (error_policy
        // 'stop'); QEMU reconnects on the next request, so let it retry, for a while.
        auto on_error = virt::paused_on_io_error(domain);
        if (on_error && *on_error) {
            auto now = std::chrono::steady_clock::now();
            if (!io_errors) io_errors_since = now;
            io_errors = true;
            if (now - io_errors_since > std::chrono::seconds(60))
                return stop_instant(domain, run, options, "the VM's disk requests keep failing");
            (void)virt::resume_domain(domain);
        } else {
            io_errors = false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    // Persistent from now on, with the local images (the inactive view of the running VM).
    auto config = domain.xml(virt::XmlFlavor::inactive);
    if (!config) return std::unexpected(config.error());
    auto defined = connection.define(*config);
    if (!defined) return std::unexpected(defined.error().with_context("make the VM persistent"));
    run.remove();
    return {};
}

// Picks up an instant recovery left by an earlier run of the same command: servers that died
// restart on their sockets and overlays, the VM resumes, copies that stopped start again.
Result<VmRestoreResult> resume_instant(repo::Repository& repo, const virt::Connection& connection,
                                       const VmRestoreOptions& options, virt::Domain domain,
                                       InstantRun run, const std::vector<Placement>& placements,
                                       VmRestoreResult result,
                                       std::chrono::steady_clock::time_point started) {
    if (domain.is_persistent()) {
        run.remove();  // the switch was done; only the cleanup was not
    } else {
        std::error_code ec;
        fs::create_directories(run.sockets, ec);
        for (auto& d : run.disks) {
            if (d.pivoted || process_alive(d.server)) continue;
            if (auto st = serve_instant_disk(repo, options, run, d); !st) {
                (void)run.save();
                return fail(st.error().kind(), "instant recovery of '" + run.vm +
                                                   "' cannot resume: " + st.error().message() +
                                                   "; the VM is left as it was");
            }
            result.notes.push_back("disk " + d.name + ": its NBD server was restarted");
        }
        if (auto st = run.save(); !st) return std::unexpected(st.error());
        auto live = domain.describe();
        if (!live) return std::unexpected(live.error());
        for (auto& d : run.disks) {
            for (const auto& spec : live->disks)
                if (spec.target == d.name && spec.source_type == "file" &&
                    spec.path == d.final_path)
                    d.pivoted = true;
            if (d.pivoted) continue;
            // A copy still running takes this run's --bandwidth (or none); one that stopped
            // is started again by finish_instant.
            (void)virt::set_block_job_speed(domain, d.name, options.copy_bandwidth);
        }
        auto state = domain.state();
        if (state && *state == virt::DomainState::paused) {
            if (auto st = virt::resume_domain(domain); !st) return std::unexpected(st.error());
            result.notes.push_back("the VM was paused and runs again");
        }
        if (auto st = finish_instant(connection, domain, run, options); !st)
            return std::unexpected(st.error());
    }
    for (const auto& p : placements) {
        if (p.disk) result.disks.push_back({p.name, p.final_path.string(), p.disk->size});
        if (p.file) result.files.push_back({p.name, p.final_path.string(), p.file->size});
    }
    result.notes.push_back("resumed an interrupted instant recovery");
    result.started = true;
    result.instant = true;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
}

// Until the VM runs, a failure undoes everything; after, the run is kept to be resumed.
struct Undo {
    InstantRun* run;
    bool keep = false;
    ~Undo() {
        if (!keep) run->remove();
    }
};

// The record of intent, before any server, socket folder or image exists.
Status record_instant_run(const InstantRun& run) {
    std::error_code ec;
    fs::create_directories(run.work, ec);
    if (ec) return fail(ErrorKind::io, "create " + run.work.string() + ": " + ec.message());
    if (auto st = run.save(); !st) return std::unexpected(st.error());
    test_kill_point("instant-recorded");
    fs::create_directories(run.sockets, ec);
    if (ec) return fail(ErrorKind::io, "create " + run.sockets.string() + ": " + ec.message());
    return {};
}

// Writes the boot files, starts each disk's server and pre-creates its local image; gives the
// VM's XML on those servers.
Result<std::string> serve_instant_vm(repo::Repository& repo, const virt::Connection& connection,
                                     const VmRestoreOptions& options, const std::string& stored_xml,
                                     const fs::path& work, const std::vector<Placement>& placements,
                                     InstantRun& run, WrittenFiles& written,
                                     VmRestoreResult& result) {
    const std::string label = "restore point " + result.point.substr(0, 12);
    vmwriter::DomainRewriteSpec spec;
    spec.new_name = options.as_name;
    spec.log_dir = options.as_name ? work.parent_path().string() : std::string();
    spec.network_exists = [&](const std::string& n) {
        auto e = connection.network_exists(n);
        return e && *e;
    };
    spec.bridge_exists = bridge_exists;
    for (const auto& p : placements) {
        if (p.file) {
            written.paths.push_back(p.final_path);
            if (auto st = write_point_file(repo, *p.file, p.final_path); !st)
                return std::unexpected(st.error());
            spec.boot_files[p.name] = p.final_path.string();
            result.files.push_back({p.name, p.final_path.string(), p.file->size});
        }
    }
    for (const auto& p : placements) {
        if (!p.disk) continue;
        InstantDisk& d = *std::find_if(run.disks.begin(), run.disks.end(),
                                       [&](const InstantDisk& x) { return x.name == p.name; });
        if (auto st = serve_instant_disk(repo, options, run, d); !st)
            return std::unexpected(st.error());
        test_kill_point("instant-server-started");
        spec.disks[p.name] = {"", "raw", d.socket};
        // The local image the copy goes into (pre-created: REUSE_EXTERNAL).
        written.paths.push_back(p.final_path);
        if (auto st = create_image(p.final_path.string(), "qcow2", p.disk->size); !st)
            return std::unexpected(st.error());
        result.disks.push_back({p.name, p.final_path.string(), p.disk->size});
    }
    auto xml = vmwriter::rewrite_domain_xml(stored_xml, spec);
    if (!xml) return std::unexpected(xml.error().with_context(label));
    for (auto& n : xml->notes) result.notes.push_back(std::move(n));
    return std::move(xml->xml);
}

Result<VmRestoreResult> restore_instant(repo::Repository& repo, const virt::Connection& connection,
                                        const VmRestoreOptions& options,
                                        const std::string& stored_xml, const fs::path& work,
                                        const std::vector<Placement>& placements,
                                        VmRestoreResult result,
                                        std::chrono::steady_clock::time_point started) {
    const std::string label = "restore point " + result.point.substr(0, 12);
    InstantRun run;
    run.work = work;
    run.vm = result.vm;
    run.point = result.point;
    run.resume = resume_command(options, result.point);
    // Unix socket paths are limited to 107 bytes: the sockets live in a short private dir.
    run.sockets = fs::path("/run/vmshadow/instant") /
                  (result.point.substr(0, 12) + "-" + std::to_string(::getpid()));
    Undo undo{&run};
    WrittenFiles written;
    for (const auto& p : placements) {
        if (!p.disk) continue;
        std::string base = (work / p.name).string();
        run.disks.push_back({p.name, (run.sockets / (p.name + ".sock")).string(), base + ".overlay",
                             base + ".pid", base + ".log", p.final_path.string()});
    }
    if (auto st = record_instant_run(run); !st) return std::unexpected(st.error());
    auto xml = serve_instant_vm(repo, connection, options, stored_xml, work, placements, run,
                                written, result);
    if (!xml) return std::unexpected(xml.error());
    // Recorded before the VM exists (without its UUID), so that a vmshadow killed right after
    // creating it still leaves a run the same command can pick up.
    if (auto st = run.save(); !st) return std::unexpected(st.error());
    test_kill_point("instant-servers-started");
    auto domain = virt::create_transient(connection, *xml);
    if (!domain) return std::unexpected(domain.error().with_context(label));
    test_kill_point("instant-vm-created");

    double running_after =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    result.notes.push_back(
        "running from the repository " +
        std::to_string(static_cast<int>(running_after * 10) / 10.0).substr(0, 4) +
        " s after the command started; copying its disks to local images");
    run.uuid = domain->uuid();
    if (auto st = run.save(); !st) {
        (void)virt::destroy_domain(*domain);
        return std::unexpected(st.error());
    }
    // From here on the VM holds the guest's writes: nothing is removed on failure.
    undo.keep = true;
    written.keep = true;
    if (auto st = finish_instant(connection, *domain, run, options); !st)
        return std::unexpected(st.error());
    result.started = true;
    result.instant = true;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
}

// An earlier run of this command left its record in `work`: it is resumed if its VM is still
// the one it made (the result), cleaned up if its VM never ran (nullopt: start over).
Result<std::optional<VmRestoreResult>> pick_up_instant_run(
    repo::Repository& repo, const virt::Connection& connection, const VmRestoreOptions& options,
    VmRestorePlan& plan, const fs::path& work, VmRestoreResult& result) {
    std::error_code ec;
    // An earlier run of this command: resume it, if its VM is still the one it made.
    auto run = InstantRun::load(work);
    if (!run) return std::unexpected(run.error());
    // No UUID yet: killed between creating the VM and recording it; then the VM of
    // that name is ours if it is transient (the record's VM always is).
    bool ours =
        plan.existing && run->point == result.point &&
        (run->uuid.empty() ? !plan.existing->is_persistent() : plan.existing->uuid() == run->uuid);
    if (!plan.existing && run->uuid.empty()) {
        // Killed before its VM ever ran: nothing of a guest's is there. Clean up and
        // start over.
        run->remove();
        for (const auto& d : run->disks) fs::remove(d.final_path, ec);
        for (const auto& p : plan.placements)
            if (p.file) fs::remove(p.final_path, ec);
        result.notes.push_back("removed what an interrupted instant recovery left");
        ours = true;
    } else if (!plan.existing) {
        // Its servers only keep the repository locked now; the overlays stay.
        run->stop_servers();
    }
    if (!ours) {
        return fail(ErrorKind::conflict,
                    "an interrupted instant recovery of '" + result.vm + "' left " + work.string() +
                        (plan.existing ? ", but the VM of that name is another one"
                                       : ", but its VM is gone (host restarted or VM "
                                         "destroyed)") +
                        ": the guest's writes since it started are in its *.overlay "
                        "files; remove that folder and the VM's files to start over");
    }
    if (plan.existing) {
        if (run->uuid.empty()) run->uuid = plan.existing->uuid();
        auto resumed =
            resume_instant(repo, connection, options, std::move(*plan.existing), std::move(*run),
                           plan.placements, std::move(result), plan.started);
        if (!resumed) return std::unexpected(resumed.error());
        return std::optional<VmRestoreResult>(std::move(*resumed));
    }
    return std::optional<VmRestoreResult>();
}

}  // namespace

Result<VmRestoreResult> restore_vm_instant(repo::Repository& repo,
                                           const virt::Connection& connection,
                                           const VmRestoreOptions& options, VmRestorePlan& plan,
                                           VmRestoreResult result) {
    fs::path work =
        (plan.in_place ? plan.placements.front().final_path.parent_path() : plan.folder) /
        (".vmshadow-instant-" + result.vm);
    // In place, the VM it recovers carries no stale checkpoints, as after any restore in place
    // (vm_restore_plan.h): forgotten once the VM runs on its local images. A resumed run's VM
    // (the transient one it made) is handed on, so its UUID is taken first.
    std::set<std::string> forget;
    if (plan.in_place) forget = {plan.desc.uuid, plan.existing ? plan.existing->uuid() : ""};
    auto finished = [&](VmRestoreResult done) {
        if (!forget.empty()) forget_replaced_checkpoints(plan, forget, done);
        return done;
    };
    std::error_code ec;
    if (fs::exists(work / kInstantRecord, ec)) {
        auto resumed = pick_up_instant_run(repo, connection, options, plan, work, result);
        if (!resumed) return std::unexpected(resumed.error());
        if (*resumed) return finished(std::move(**resumed));
    }
    if (!plan.existing) {
        // Servers of this plan.folder that no record names (an older vmshadow killed before it
        // wrote one) serve no VM: they only hold the repository's lock.
        auto orphans = processes_with_argument("overlay=" + work.string() + "/");
        for (const auto& p : orphans) (void)stop_process(p, std::chrono::seconds(10));
        if (!orphans.empty())
            result.notes.push_back("stopped " + std::to_string(orphans.size()) +
                                   " NBD server(s) an interrupted instant recovery left");
    }
    if (find_file(plan.point(), "memory"))
        result.notes.push_back("cold boot: instant recovery does not use the saved memory");
    if (plan.existing || !in_place_files_free(plan.placements, plan.in_place)) {
        return fail(ErrorKind::unsupported,
                    "--instant restores a VM that does not exist (yet): restore it --as "
                    "NEW-NAME, or remove '" +
                        result.vm + "' and its files first");
    }
    for (const auto& p : plan.placements) {  // the local images and files are new files
        std::error_code ec;
        if (!plan.in_place && fs::exists(p.final_path, ec))
            return fail(ErrorKind::conflict,
                        p.final_path.string() + " exists: choose another folder with --to");
    }
    auto done = restore_instant(repo, connection, options, plan.stored_xml, work, plan.placements,
                                std::move(result), plan.started);
    if (!done) return std::unexpected(done.error());
    return finished(std::move(*done));
}

}  // namespace vmshadow::engine
