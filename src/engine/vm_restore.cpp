// SPDX-License-Identifier: MIT
#include "engine/vm_restore.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/atomic_file.h"
#include "common/process.h"
#include "common/test_hook.h"
#include "engine/image_jobs.h"
#include "engine/nbd_image.h"
#include "engine/restore_journal.h"
#include "engine/restore_target.h"
#include "engine/vm_lock.h"
#include "engine/vm_point.h"
#include "export/point_server.h"
#include "repo/lock.h"
#include "repo/restore.h"
#include "virt/block_copy.h"
#include "virt/domain_xml.h"
#include "virt/lifecycle.h"
#include "vmwriter/domain_rewrite.h"
#include "vmwriter/vm_restore_writer.h"
#include "vmwriter/vm_writer.h"
#include "vss/restore_coordinator.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRestoreSuffix = ".vmshadow-restore";

// Files this restore wrote; removed unless the restore got far enough to keep them.
struct WrittenFiles {
    std::vector<fs::path> paths;
    bool keep = false;
    ~WrittenFiles() {
        if (keep) return;
        for (const auto& p : paths) {
            std::error_code ec;
            fs::remove(p, ec);
        }
    }
};

bool bridge_exists(const std::string& name) {
    std::error_code ec;
    return !name.empty() && fs::exists(fs::path("/sys/class/net") / name, ec);
}

// Where one disk or file of the point ends up, and where it is written first.
struct Placement {
    std::string name;  // disk target or file role
    fs::path final_path, written;
    const repo::DiskRecord* disk = nullptr;
    const repo::FileRecord* file = nullptr;
};

// A write that failed because the target's filesystem has no room left says so, and what to
// do, instead of the NBD or write call's own words. The failed write's partial file is gone
// by now, so the free space no longer shows it: the error's own ENOSPC text does.
Error explain_full_disk(const Error& e, const Placement& p, bool in_place) {
    fs::path dir = p.written.parent_path();
    if (e.kind() != ErrorKind::io || e.message().find(std::strerror(ENOSPC)) == std::string::npos)
        return e;  // it names the disk already
    return Error(ErrorKind::io,
                 "disk " + p.name + ": the filesystem of " + dir.string() + " is full (writing " +
                     p.written.filename().string() + "): free space there" +
                     (in_place ? "" : " or restore --to a folder with room") + ", then retry");
}

bool in_place_files_free(const std::vector<Placement>& placements, bool in_place) {
    if (!in_place) return true;
    for (const auto& p : placements) {
        std::error_code ec;
        if (fs::exists(p.final_path, ec)) return false;
    }
    return true;
}

// A VM restore writes files: a disk or boot file's place must be absent or a regular file
// (restore_target.h), and so must the temp name it is written to first. A block device is
// not written into here — the VM's XML would still call it a file — and says what to do.
Status check_vm_target(const Placement& p, bool in_place) {
    for (const fs::path& path : {p.final_path, p.written}) {
        auto target = inspect_restore_target(path.string());
        if (!target) return std::unexpected(target.error());
        if (target->kind == TargetKind::block_device) {
            return fail(in_place ? ErrorKind::unsupported : ErrorKind::invalid_argument,
                        p.name + ": " + path.string() +
                            " is a block device: a VM restore writes disk files; restore --as "
                            "NEW-NAME --to DIR, or write the disk into the device with `image "
                            "restore` (nothing was written)");
        }
        if (auto st = refuse_unwritable(*target, false); !st)
            return std::unexpected(st.error().with_context(p.name));
    }
    return {};
}

// Instant recovery: the VM runs from the repository's NBD exports (each with a local overlay
// for the guest's writes; an I/O error pauses the guest instead of failing a write) while QEMU
// copies every disk to its final local image, mirroring new writes; once all copies are in
// sync the disks pivot to the local images, the VM becomes persistent and the servers stop.
//
// The servers outlive vmshadow, and the run is recorded in its work folder (instant.json):
// if a server dies the VM is paused with every write kept and the command fails; if vmshadow
// is killed the VM keeps running. Either way the same command run again resumes: dead servers
// restart on the same sockets and overlays (QEMU reconnects), the VM resumes, copies that
// stopped start again, and the switch completes.
//
// Record before start: the record (fsync'd) names the run's socket folder and every disk
// before anything else exists, and each server's pid and start time before nbdkit runs
// (process.h). So a vmshadow killed at any instant leaves nothing the record does not name,
// and the next run (or `repo unlock`, when no VM runs on them) stops every server of it.
constexpr const char* kInstantRecord = "instant.json";

struct InstantDisk {
    std::string name, socket, overlay, pidfile, log, final_path;
    ProcessId server;
    ProcessId session;  // the session nbdkit lives in, recorded before it ran
    bool pivoted = false;
};

struct InstantRun {
    fs::path work, sockets;
    std::string vm, uuid, point;
    std::string resume;  // the command that resumes it, for `repo unlock`
    std::vector<InstantDisk> disks;

    Status save() const {
        nlohmann::json j{{"version", 1},
                         {"vm", vm},
                         {"uuid", uuid},
                         {"point", point},
                         {"resume", resume},
                         {"sockets", sockets.string()},
                         {"disks", nlohmann::json::array()}};
        for (const auto& d : disks) {
            j["disks"].push_back({{"name", d.name},
                                  {"socket", d.socket},
                                  {"overlay", d.overlay},
                                  {"pidfile", d.pidfile},
                                  {"log", d.log},
                                  {"final", d.final_path},
                                  {"pid", d.server.pid},
                                  {"start_time", d.server.start_time},
                                  {"session_pid", d.session.pid},
                                  {"session_start_time", d.session.start_time},
                                  {"pivoted", d.pivoted}});
        }
        return write_file_atomically(work / kInstantRecord, j.dump(2) + "\n", 0600);
    }
    // The recorded servers, and any nbdkit serving one of this run's overlays that an older
    // vmshadow started without recording it.
    void stop_servers() const {
        for (const auto& d : disks) {
            (void)stop_process(d.server, std::chrono::seconds(10));
            (void)stop_session(d.session, std::chrono::seconds(10));
        }
        for (const auto& p : processes_with_argument("overlay=" + work.string() + "/"))
            (void)stop_process(p, std::chrono::seconds(10));
    }
    // The run is over (or never ran): servers, sockets and the work folder with its overlays go.
    void remove() const {
        stop_servers();
        std::error_code ec;
        fs::remove_all(work, ec);
        fs::remove_all(sockets, ec);
    }

    static Result<InstantRun> load(const fs::path& work) {
        std::ifstream in(work / kInstantRecord);
        auto j = nlohmann::json::parse(in, nullptr, false);
        if (!in.is_open() || j.is_discarded() || j.value("version", 0) != 1)
            return fail(ErrorKind::corruption,
                        (work / kInstantRecord).string() + " is missing or unreadable");
        InstantRun run;
        run.work = work;
        run.sockets = j.value("sockets", "");
        run.vm = j.value("vm", "");
        run.uuid = j.value("uuid", "");
        run.point = j.value("point", "");
        run.resume = j.value("resume", "");
        for (const auto& d : j.value("disks", nlohmann::json::array())) {
            InstantDisk disk;
            disk.name = d.value("name", "");
            disk.socket = d.value("socket", "");
            disk.overlay = d.value("overlay", "");
            disk.pidfile = d.value("pidfile", "");
            disk.log = d.value("log", "");
            disk.final_path = d.value("final", "");
            disk.server = {d.value("pid", -1), d.value("start_time", "")};
            disk.session = {d.value("session_pid", -1), d.value("session_start_time", "")};
            disk.pivoted = d.value("pivoted", false);
            run.disks.push_back(std::move(disk));
        }
        return run;
    }
};

// The command that resumes an instant recovery, for messages.
std::string resume_command(const VmRestoreOptions& options, const std::string& point) {
    std::string cmd = "vmshadow restore " + point.substr(0, 12) + " --instant";
    if (options.as_name) cmd += " --as " + *options.as_name;
    if (!options.to_dir.empty()) cmd += " --to " + options.to_dir;
    return cmd;
}

// What the servers' repository lock says it is for; instant_record_of_lock reads it back.
constexpr const char* kInstantOwner = "instant recovery (record ";

std::string instant_owner(const InstantRun& run) {
    std::error_code ec;
    fs::path record = fs::absolute(run.work / kInstantRecord, ec);
    return std::string(kInstantOwner) + record.string() + ") of '" + run.vm + "'";
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

// Waits until every copy is in sync and pivots each disk to its local image, then makes the
// VM persistent and stops the servers. A server that dies or a copy that stops pauses the VM
// (nothing it wrote is lost: the overlays and the local images keep it) and fails with how to
// resume; everything is left as it is for that.
Status finish_instant(const virt::Connection& connection, virt::Domain& domain, InstantRun& run,
                      const VmRestoreOptions& options) {
    auto stop = [&](const std::string& why) -> Status {
        bool paused = static_cast<bool>(virt::suspend_domain(domain));
        (void)run.save();
        return fail(ErrorKind::unavailable,
                    "instant recovery of '" + run.vm + "' stopped: " + why + ". " +
                        (paused ? "The VM is paused and keeps every write it made"
                                : "The VM could not be paused; its disk requests wait on "
                                  "error") +
                        "; fix the cause and run `" + resume_command(options, run.point) +
                        "` again to continue");
    };
    constexpr int kCopyStarts = 10;
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
            if (!process_alive(d.server)) {
                std::string last = last_line_in_file(d.log);
                return stop("disk " + d.name + ": its NBD server (nbdkit) is gone" +
                            (last.empty() ? "" : " (last log line: " + last + ")") + "; log " +
                            d.log);
            }
            auto progress = virt::block_job_progress(domain, d.name);
            if (!progress) return stop(progress.error().message());
            if (!progress->running) {
                // Not there (a resumed run) or failed: its first reads after a server restart
                // fail while QEMU reconnects in the background, so try again, a few times.
                if (++copy_starts[d.name] > kCopyStarts)
                    return stop("disk " + d.name + ": the copy stopped before it finished (" +
                                std::to_string(kCopyStarts) + " starts; see " + d.log + ")");
                if (copy_starts[d.name] > 1) std::this_thread::sleep_for(std::chrono::seconds(1));
                if (auto st = virt::start_block_copy(domain, d.name, d.final_path, "qcow2",
                                                     options.copy_bandwidth);
                    !st)
                    return stop(st.error().message());
                all = false;
                continue;
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
                continue;
            }
            all = false;
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
                return stop("the VM's disk requests keep failing");
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
    // Until the VM runs, a failure undoes everything; after, the run is kept to be resumed.
    struct Undo {
        InstantRun* run;
        bool keep = false;
        ~Undo() {
            if (!keep) run->remove();
        }
    } undo{&run};
    WrittenFiles written;
    for (const auto& p : placements) {
        if (!p.disk) continue;
        std::string base = (work / p.name).string();
        run.disks.push_back({p.name, (run.sockets / (p.name + ".sock")).string(), base + ".overlay",
                             base + ".pid", base + ".log", p.final_path.string()});
    }
    // The record of intent, before any server, socket folder or image exists.
    std::error_code ec;
    fs::create_directories(run.work, ec);
    if (ec) return fail(ErrorKind::io, "create " + run.work.string() + ": " + ec.message());
    if (auto st = run.save(); !st) return std::unexpected(st.error());
    test_kill_point("instant-recorded");
    fs::create_directories(run.sockets, ec);
    if (ec) return fail(ErrorKind::io, "create " + run.sockets.string() + ": " + ec.message());
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
    // Recorded before the VM exists (without its UUID), so that a vmshadow killed right after
    // creating it still leaves a run the same command can pick up.
    if (auto st = run.save(); !st) return std::unexpected(st.error());
    test_kill_point("instant-servers-started");
    auto domain = virt::create_transient(connection, xml->xml);
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

// The journal of this in-place restore, not yet saved: the old VM as it is, the new one on
// the staged files and on the final names, and every file's names.
Result<RestoreJournal> prepare_journal(const Result<virt::Domain>& existing,
                                       const std::vector<Placement>& placements,
                                       vmwriter::DomainRewriteSpec spec,
                                       const std::string& stored_xml, const std::string& final_xml,
                                       const std::optional<fs::path>& memory_file,
                                       const VmRestoreOptions& options,
                                       const VmRestoreResult& result) {
    RestoreJournal j;
    j.path = RestoreJournal::path_for(placements.front().final_path.parent_path(), result.vm);
    j.vm = result.vm;
    j.point = result.point;
    j.start = options.start;
    j.final_xml = final_xml;
    if (memory_file) j.memory_file = memory_file->string();
    if (existing) {
        auto xml = existing->xml(virt::XmlFlavor::inactive);
        if (!xml) return std::unexpected(xml.error());
        j.old_xml = std::move(*xml);
        j.old_uuid = existing->uuid();
        auto state = existing->state();
        j.old_was_running = state && *state == virt::DomainState::running;
    }
    for (const auto& p : placements) {
        if (p.disk) spec.disks[p.name] = {p.written.string(), options.format};
        if (p.file) spec.boot_files[p.name] = p.written.string();
        std::error_code ec;
        j.files.push_back({p.final_path.string(), p.written.string(),
                           p.final_path.string() + ".vmshadow-old", fs::exists(p.final_path, ec)});
    }
    auto staged = vmwriter::rewrite_domain_xml(stored_xml, spec);
    if (!staged) return std::unexpected(staged.error());
    j.staged_xml = std::move(staged->xml);
    auto desc = virt::parse_domain_xml(final_xml);
    if (!desc) return std::unexpected(desc.error());
    j.new_uuid = desc->uuid;
    return j;
}

// The journal of an in-place restore of this VM that was killed (restore_journal.h): a
// "prepared" one is rolled back, a "committed" one finished. `finished` says the latter
// happened for this very point: then there is nothing left to do.
Status recover_interrupted(const virt::Connection& connection, const fs::path& folder,
                           VmRestoreResult& result, bool& finished) {
    auto journal = RestoreJournal::load(RestoreJournal::path_for(folder, result.vm));
    if (!journal) return std::unexpected(journal.error());
    if (!*journal) return {};
    bool forward = (*journal)->phase == "committed";
    auto note = (*journal)->recover(connection);
    if (!note) return std::unexpected(note.error());
    result.notes.push_back(*note);
    finished = forward && (*journal)->point == result.point;
    return {};
}

}  // namespace

Result<VmRestoreResult> restore_vm(repo::Repository& repo, const virt::Connection& connection,
                                   const VmRestoreOptions& options) {
    auto started = std::chrono::steady_clock::now();
    VmRestoreResult result;
    if (options.format != "raw" && options.format != "qcow2")
        return fail(ErrorKind::invalid_argument,
                    "--format must be qcow2 or raw, not " + options.format);
    if (!options.to_dir.empty() && !options.as_name)
        return fail(ErrorKind::invalid_argument,
                    "--to needs --as NAME (an in-place restore "
                    "puts the disks where they were)");
    // Readers hold the shared lock for their whole life: gc must not remove what we read.
    auto opened = open_vm_point(repo, options.point, "restore", "use `vmshadow image restore`");
    if (!opened) return std::unexpected(opened.error());
    const repo::RestorePoint* point = &opened->point;
    const std::string& label = opened->label;
    result.point = point->id.hex();
    result.source_vm = point->vm;
    result.consistency = point->consistency;
    result.vm = options.as_name.value_or(point->vm);
    const bool in_place = !options.as_name;

    const repo::FileRecord* xml_record = find_file(*point, "domain_xml");
    const repo::FileRecord* doc_record = find_file(*point, "backup_document");
    if (!xml_record || !doc_record)
        return fail(ErrorKind::corruption, label + " lacks its domain XML or backup document");
    auto stored_xml = read_text(repo, *xml_record);
    if (!stored_xml) return std::unexpected(stored_xml.error().with_context(label));
    auto doc_text = read_text(repo, *doc_record);
    if (!doc_text) return std::unexpected(doc_text.error().with_context(label));
    auto document = vss::parse_backup_document(*doc_text);
    if (!document) return std::unexpected(document.error().with_context(label));
    auto desc = virt::parse_domain_xml(*stored_xml);
    if (!desc) return std::unexpected(desc.error().with_context(label));

    // 1. Checks before anything is written.
    auto existing = connection.lookup(result.vm);
    if (!existing && existing.error().kind() != ErrorKind::not_found)
        return std::unexpected(existing.error());
    if (point->disks.empty()) return fail(ErrorKind::corruption, label + " has no disks");
    // The VM's lock, before anything is touched: a backup or another restore of that VM makes
    // this one fail with a conflict naming it. --as locks the name it creates.
    std::vector<VmLockKey> lock_keys{{result.vm, in_place ? desc->uuid : std::string()}};
    if (existing && existing->uuid() != lock_keys.front().uuid)
        lock_keys.push_back({result.vm, existing->uuid()});
    auto vm_lock = VmLock::acquire(
        lock_keys,
        options.instant ? "instant recovery" : (options.replace ? "restore --replace" : "restore"));
    if (!vm_lock) return std::unexpected(vm_lock.error());
    // An earlier in-place restore of this VM that was killed: finished or rolled back first.
    bool finished_earlier = false;
    if (in_place) {
        auto recovered = recover_interrupted(
            connection, fs::path(point->disks.front().info.value("path", "")).parent_path(), result,
            finished_earlier);
        if (!recovered) return std::unexpected(recovered.error());
        existing = connection.lookup(result.vm);
        if (!existing && existing.error().kind() != ErrorKind::not_found)
            return std::unexpected(existing.error());
    }
    if (existing && !options.replace && !options.instant &&
        !finished_earlier) {  // instant: it may be resuming
        return fail(ErrorKind::conflict,
                    "a VM named '" + result.vm + "' exists: add --replace to replace it" +
                        (in_place ? ", or restore beside it with --as NEW-NAME" : ""));
    }

    fs::path folder;
    if (!in_place) {
        std::string first = point->disks.front().info.value("path", "");
        folder = options.to_dir.empty() ? fs::path(first).parent_path() / *options.as_name
                                        : fs::path(options.to_dir);
        std::error_code ec;
        fs::create_directories(folder, ec);
        if (ec) return fail(ErrorKind::io, "create " + folder.string() + ": " + ec.message());
    }
    std::vector<Placement> placements;
    auto place = [&](const std::string& name, const fs::path& original) {
        Placement p;
        p.name = name;
        p.final_path = in_place ? original : folder / original.filename();
        p.written = in_place ? fs::path(original.string() + kRestoreSuffix) : p.final_path;
        return p;
    };
    for (const auto& d : point->disks) {
        std::string original = d.info.value("path", "");
        if (original.empty())
            return fail(ErrorKind::corruption, label + ": disk " + d.name + " has no path");
        Placement p = place(d.name, original);
        p.disk = &d;
        placements.push_back(std::move(p));
    }
    for (const auto& [role, path] : desc->boot.by_role()) {
        const repo::FileRecord* f = find_file(*point, role);
        if (!f) {
            result.notes.push_back(role + " " + path +
                                   " is not in the restore point: the VM uses the host's file");
            continue;
        }
        Placement p = place(role, path);
        p.file = f;
        placements.push_back(std::move(p));
    }
    if (finished_earlier) {
        for (const auto& p : placements) {
            if (p.disk) result.disks.push_back({p.name, p.final_path.string(), p.disk->size});
            if (p.file) result.files.push_back({p.name, p.final_path.string(), p.file->size});
        }
        result.replaced = true;
        result.seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        return result;
    }
    for (const auto& p : placements)
        if (auto st = check_vm_target(p, in_place); !st) return std::unexpected(st.error());
    if (options.instant) {
        fs::path work = (in_place ? placements.front().final_path.parent_path() : folder) /
                        (".vmshadow-instant-" + result.vm);
        std::error_code ec;
        if (fs::exists(work / kInstantRecord, ec)) {
            // An earlier run of this command: resume it, if its VM is still the one it made.
            auto run = InstantRun::load(work);
            if (!run) return std::unexpected(run.error());
            // No UUID yet: killed between creating the VM and recording it; then the VM of
            // that name is ours if it is transient (the record's VM always is).
            bool ours =
                existing && run->point == result.point &&
                (run->uuid.empty() ? !existing->is_persistent() : existing->uuid() == run->uuid);
            if (!existing && run->uuid.empty()) {
                // Killed before its VM ever ran: nothing of a guest's is there. Clean up and
                // start over.
                run->remove();
                for (const auto& d : run->disks) fs::remove(d.final_path, ec);
                for (const auto& p : placements)
                    if (p.file) fs::remove(p.final_path, ec);
                result.notes.push_back("removed what an interrupted instant recovery left");
                ours = true;
            } else if (!existing) {
                // Its servers only keep the repository locked now; the overlays stay.
                run->stop_servers();
            }
            if (!ours) {
                return fail(ErrorKind::conflict,
                            "an interrupted instant recovery of '" + result.vm + "' left " +
                                work.string() +
                                (existing ? ", but the VM of that name is another one"
                                          : ", but its VM is gone (host restarted or VM "
                                            "destroyed)") +
                                ": the guest's writes since it started are in its *.overlay "
                                "files; remove that folder and the VM's files to start over");
            }
            if (existing) {
                if (run->uuid.empty()) run->uuid = existing->uuid();
                return resume_instant(repo, connection, options, std::move(*existing),
                                      std::move(*run), placements, std::move(result), started);
            }
        }
        if (!existing) {
            // Servers of this folder that no record names (an older vmshadow killed before it
            // wrote one) serve no VM: they only hold the repository's lock.
            auto orphans = processes_with_argument("overlay=" + work.string() + "/");
            for (const auto& p : orphans) (void)stop_process(p, std::chrono::seconds(10));
            if (!orphans.empty())
                result.notes.push_back("stopped " + std::to_string(orphans.size()) +
                                       " NBD server(s) an interrupted instant recovery left");
        }
        if (find_file(*point, "memory"))
            result.notes.push_back("cold boot: instant recovery does not use the saved memory");
        if (existing || !in_place_files_free(placements, in_place)) {
            return fail(ErrorKind::unsupported,
                        "--instant restores a VM that does not exist (yet): restore it --as "
                        "NEW-NAME, or remove '" +
                            result.vm + "' and its files first");
        }
        for (const auto& p : placements) {  // the local images and files are new files
            std::error_code ec;
            if (!in_place && fs::exists(p.final_path, ec))
                return fail(ErrorKind::conflict,
                            p.final_path.string() + " exists: choose another folder with --to");
        }
        return restore_instant(repo, connection, options, *stored_xml, work, placements,
                               std::move(result), started);
    }

    for (const auto& p : placements) {
        std::error_code ec;
        if (!fs::exists(p.final_path, ec)) continue;
        if (!in_place) {
            return fail(ErrorKind::conflict,
                        p.final_path.string() + " exists: choose another folder with --to");
        }
        if (!options.replace) {
            // No VM of that name, but its files are still there: never overwrite them unasked.
            return fail(ErrorKind::conflict, p.final_path.string() +
                                                 " exists: add --replace to overwrite it, or "
                                                 "restore beside it with --as NEW-NAME");
        }
    }
    std::optional<fs::path> memory_file;
    const repo::FileRecord* memory = find_file(*point, "memory");
    if (memory && in_place) {
        memory_file =
            placements.front().final_path.parent_path() / (result.vm + ".vmshadow-memory.save");
    } else if (memory) {
        result.notes.push_back(
            "cold boot: the saved memory image was not used (libvirt refuses to resume a saved "
            "state under another name, UUID or MAC address)");
    }

    // 2. Write everything beside the old files, then check it is all there.
    WrittenFiles written;
    for (const auto& p : placements) {
        written.paths.push_back(p.written);
        std::error_code ec;
        fs::remove(p.written, ec);  // a leftover of an earlier interrupted restore
        if (p.disk) {
            ImageRestoreOptions io;
            io.point = result.point;
            io.disk = p.disk->name;
            io.output = p.written.string();
            io.format = options.format;
            io.workers = options.workers;
            io.task = options.task;
            auto r = restore_image(repo, io);
            if (!r) {
                return std::unexpected(explain_full_disk(r.error(), p, in_place)
                                           .with_context("restore of '" + result.vm +
                                                         "' stopped before anything was changed "
                                                         "(restored files removed)"));
            }
            result.disks.push_back({p.name, p.final_path.string(), r->size});
        } else {
            if (auto st = write_point_file(repo, *p.file, p.written); !st)
                return std::unexpected(st.error());
            result.files.push_back({p.name, p.final_path.string(), p.file->size});
        }
    }
    if (memory_file) {
        written.paths.push_back(*memory_file);
        if (auto st = write_point_file(repo, *memory, *memory_file); !st)
            return std::unexpected(st.error());
    }
    std::vector<std::string> missing;
    for (const auto& p : placements) {
        std::error_code ec;
        if (!fs::exists(p.written, ec)) missing.push_back(p.written.string());
    }
    if (!missing.empty()) {
        std::string names;
        for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
        return fail(ErrorKind::io, "restore incomplete, nothing was changed: missing " + names);
    }
    // The last moment a cancel is honoured: after it the swap runs to its end.
    if (options.task && options.task->cancel().requested()) {
        return fail(ErrorKind::cancelled, "restore of '" + result.vm +
                                              "' cancelled before the swap: nothing was changed "
                                              "(restored files removed)");
    }

    // The XML the VM is defined with.
    vmwriter::DomainRewriteSpec spec;
    for (const auto& p : placements) {
        if (p.disk) spec.disks[p.name] = {p.final_path.string(), options.format};
        if (p.file) spec.boot_files[p.name] = p.final_path.string();
    }
    spec.new_name = options.as_name;
    spec.log_dir = in_place ? std::string() : folder.string();
    spec.network_exists = [&](const std::string& n) {
        auto e = connection.network_exists(n);
        return e && *e;
    };
    spec.bridge_exists = bridge_exists;
    auto rewritten = vmwriter::rewrite_domain_xml(*stored_xml, spec);
    if (!rewritten) return std::unexpected(rewritten.error().with_context(label));
    for (auto& n : rewritten->notes) result.notes.push_back(std::move(n));

    // 3.–5. PreRestore, swap, PostRestore. In place, a journal makes the swap a transaction
    // (restore_journal.h): at every instant the old VM or the new one is defined on complete
    // files, and the next run finishes or rolls back what a killed one left.
    const vss::ComponentEntry* component = nullptr;
    for (const auto& c : document->components)
        if (c.key.logical_path == vmwriter::kVmLogicalPath && c.key.name == point->vm &&
            c.key.writer_id.rfind(vmwriter::kVmWriterId, 0) == 0)
            component = &c;
    if (!component)
        return fail(ErrorKind::corruption, label + ": no VM component in its backup document");
    std::optional<RestoreJournal> journal;
    if (in_place) {
        auto prepared = prepare_journal(existing, placements, spec, *stored_xml, rewritten->xml,
                                        memory_file, options, result);
        if (!prepared) return std::unexpected(prepared.error().with_context(label));
        journal = std::move(*prepared);
    }
    test_kill_point("staged");
    if (journal) {
        if (auto st = journal->save(); !st) return std::unexpected(st.error());
        if (auto st = journal->link_aside(); !st) {
            journal->remove_leftovers();
            return fail(st.error().kind(),
                        "restore of '" + result.vm +
                            "' failed before anything was replaced: " + st.error().message() +
                            "; the VM was left as it was and the restored "
                            "files were removed: fix the cause and run the "
                            "restore again with --replace");
        }
        test_kill_point("journal");
    }
    vmwriter::VmRestoreTarget target;
    target.component = component->key;
    target.name = result.vm;
    target.replace = options.replace;
    target.xml = rewritten->xml;
    if (memory_file) target.memory_file = memory_file->string();
    target.start = options.start;
    auto writer = std::make_shared<vmwriter::VmRestoreWriter>(connection, target);
    vss::RestoreOptions ro;
    ro.vms = {result.vm};
    if (options.state_file) ro.state_file = *options.state_file;
    vss::RestoreCoordinator coordinator({writer}, *document, ro);
    auto give_up = [&](const Error& e) {
        if (journal) journal->remove_leftovers();
        return std::unexpected(e);
    };
    if (auto m = coordinator.gather_writer_metadata(); !m) return give_up(m.error());
    if (auto st = coordinator.select_for_restore(component->key); !st) return give_up(st.error());
    if (auto st = coordinator.pre_restore(); !st) {
        (void)coordinator.post_restore();  // status none: puts back anything taken away
        return give_up(st.error());
    }
    result.replaced = writer->outcome().removed_existing;
    test_kill_point("stopped");
    if (journal) {
        Status swapped = journal->commit(connection);
        if (swapped) test_kill_point("committed");
        if (swapped) swapped = journal->swap();
        if (!swapped) {
            // The old files are still aside: the old VM comes back on them, and the writer
            // starts it again if it ran.
            auto back = journal->roll_back(connection, false);
            if (!back) written.keep = true;  // the journal still names them
            (void)coordinator.set_file_restore_status(component->key, vss::FileRestoreStatus::none);
            auto started_again = back ? coordinator.post_restore() : Status(back);
            return fail(
                swapped.error().kind(),
                "restore of '" + result.vm +
                    "' failed before anything was replaced: " + swapped.error().message() + "; " +
                    (started_again ? "VM '" + result.vm + "' was put back as it was"
                                   : "putting the old VM back: " + started_again.error().message() +
                                         (back ? ""
                                               : " (journal " + journal->path.string() +
                                                     " kept: the next restore "
                                                     "of this VM finishes it)")) +
                    "; the restored files were removed: fix the cause and run the "
                    "restore again with --replace");
        }
        test_kill_point("swapped");
    }
    written.keep = true;
    if (auto st = coordinator.set_file_restore_status(component->key, vss::FileRestoreStatus::all);
        !st)
        return std::unexpected(st.error());
    auto post = coordinator.post_restore();
    if (journal && writer->outcome().defined) {
        journal->remove_leftovers();
    } else if (journal) {
        // Defined on the staged files: complete; the next in-place restore finishes the names.
        return fail(post.error().kind(),
                    post.error().message() + " (VM '" + result.vm +
                        "' is defined on the restored files, named *" + kRestoreSuffix +
                        "; run the same restore command again to finish; journal " +
                        journal->path.string() + ")");
    } else if (memory_file) {
        std::error_code ec;
        fs::remove(*memory_file, ec);
    }
    if (!post) {
        return fail(post.error().kind(),
                    post.error().message() + " (the restored disks are in place at " +
                        placements.front().final_path.parent_path().string() + ")");
    }
    result.resumed = writer->outcome().resumed;
    result.started = writer->outcome().started || result.resumed;
    if (result.replaced)
        result.notes.push_back(
            "the VM's checkpoints were removed with it: its next backup is full");
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
}

std::optional<std::string> instant_record_of_lock(const std::string& operation) {
    const std::string prefix = std::string("nbd export for ") + kInstantOwner;
    if (!operation.starts_with(prefix)) return std::nullopt;
    auto close = operation.find(") of '", prefix.size());
    if (close == std::string::npos) return std::nullopt;
    return operation.substr(prefix.size(), close - prefix.size());
}

Result<AbandonedInstantRun> stop_abandoned_instant_servers(const virt::Connection& connection,
                                                           const std::string& record) {
    fs::path work = fs::path(record).parent_path();
    std::error_code ec;
    if (fs::path(record).filename() != kInstantRecord || !fs::exists(record, ec))
        return fail(ErrorKind::not_found, "no instant recovery record at " + record);
    auto run = InstantRun::load(work);
    if (!run) return std::unexpected(run.error());
    auto vm = connection.lookup(run->vm);
    if (!vm && vm.error().kind() != ErrorKind::not_found) return std::unexpected(vm.error());
    bool runs_on_them = vm && (run->uuid.empty() ? !vm->is_persistent() : vm->uuid() == run->uuid);
    std::string again =
        run->resume.empty() ? "the same `vmshadow restore --instant`" : "`" + run->resume + "`";
    if (runs_on_them) {
        return AbandonedInstantRun{
            false, "VM '" + run->vm +
                       "' runs on it (an instant recovery whose vmshadow is gone): " + again +
                       " finishes the recovery and stops it"};
    }
    run->stop_servers();
    return AbandonedInstantRun{
        true,
        "stopped the NBD server(s) of an interrupted instant recovery of '" + run->vm +
            "' (no VM runs on them); " +
            (run->uuid.empty()
                 ? again + " cleans up and starts over"
                 : "its VM is gone: the guest's writes since it started are in " + work.string() +
                       "/*.overlay; remove that folder and the VM's "
                       "files to start over")};
}

}  // namespace vmshadow::engine
