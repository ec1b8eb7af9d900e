// SPDX-License-Identifier: MIT
#include "engine/vm_backup.h"

#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "common/test_hook.h"
#include "engine/checkpoint_tracking.h"
#include "engine/export_copy.h"
#include "engine/nbd_image.h"
#include "engine/restore_journal.h"
#include "engine/snapshot_run.h"
#include "engine/vm_lock.h"
#include "engine/vm_point.h"
#include "repo/backup_session.h"
#include "repo/restore.h"
#include "virt/checkpoints.h"
#include "virt/vm_health.h"
#include "vmwriter/pull_backup_provider.h"
#include "vmwriter/vm_writer.h"
#include "vss/coordinator.h"
#include "vss/exec_writer.h"

namespace vmshadow::engine {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

// What the previous restore point of a VM in this repository offers the next backup.
struct Previous {
    const repo::RestorePoint* point = nullptr;
    std::optional<vss::BackupDocument> document;
    std::string checkpoint_xml;
    std::vector<std::pair<std::string, std::string>> disk_paths;
};

// The newest VM restore point of `vm` (image-file points of the same name do not count).
Result<Previous> find_previous(const repo::Repository& repo, const repo::PointListing& listing,
                               const std::string& vm) {
    Previous prev;
    for (const auto& p : listing.points)
        if (p.vm == vm && p.metadata.value("kind", "") == "vm") prev.point = &p;
    if (!prev.point) return prev;
    for (const auto& d : prev.point->disks)
        prev.disk_paths.emplace_back(d.name, d.info.value("path", ""));
    if (const auto* f = find_file(*prev.point, "backup_document")) {
        auto text = read_text(repo, *f);
        if (!text) return std::unexpected(text.error());
        auto doc = vss::parse_backup_document(*text);
        if (!doc) return std::unexpected(doc.error());
        prev.document = std::move(*doc);
    }
    if (const auto* f = find_file(*prev.point, "checkpoint_xml")) {
        auto text = read_text(repo, *f);
        if (!text) return std::unexpected(text.error());
        prev.checkpoint_xml = std::move(*text);
    }
    return prev;
}

// The VM's checkpoint operations since its last point (checkpoint_tracking.h): a full read
// saying why when they broke the dirty bitmaps' history, else the disks they moved are not
// taken for replaced ones. An unreadable record is taken as broken tracking.
void follow_checkpoints(const virt::Domain& domain, const repo::RestorePoint& previous,
                        vmwriter::VmWriterOptions& wo) {
    auto tree = load_checkpoint_tree(domain.uuid());
    if (!tree) {
        wo.force_full = true;
        wo.full_reason = "its checkpoint record could not be read (" + tree.error().message() + ")";
        return;
    }
    if (auto why = checkpoint_tracking_broken(*tree, previous.time)) {
        wo.force_full = true;
        wo.full_reason = *why;
        return;
    }
    auto description = domain.describe();
    if (!description) return;  // the writer meets the same error and says it
    std::vector<std::pair<std::string, std::string>> current;
    for (const auto& d : description->disks) current.emplace_back(d.target, d.path);
    wo.previous_disk_paths = paths_across_checkpoints(*tree, wo.previous_disk_paths, current);
}

struct VmRun {
    std::shared_ptr<virt::Domain> domain;
    std::shared_ptr<vmwriter::VmWriter> writer;
    Previous previous;
    repo::PointBuilder* point = nullptr;
    VmBackupOutcome outcome;
    Clock::time_point started;
};

class BackupRun {
  public:
    BackupRun(repo::Repository& repo, const virt::Connection& connection,
              const VmBackupOptions& options)
        : repo_(repo),
          connection_(connection),
          options_(options),
          task_(options.task ? *options.task : idle_task_) {}

    // Backs up `vms` as one snapshot set and one commit; fills outcomes_ either way.
    Status run(const std::vector<std::string>& vms, const repo::PointListing& listing);
    std::vector<VmBackupOutcome> outcomes() const {
        std::vector<VmBackupOutcome> out;
        for (const auto& r : runs_) out.push_back(r.outcome);
        return out;
    }

  private:
    Status open(const std::vector<std::string>& vms, const repo::PointListing& listing);
    Result<std::vector<std::shared_ptr<vss::Writer>>> make_writers();
    Status snapshot_and_copy(vss::Coordinator& coordinator);
    Status commit(vss::Coordinator& coordinator);
    void note_paused_after_copy();
    Status describe_points(const vss::BackupDocument& document);
    void finish_outcomes();
    Status copy_vm(VmRun& vm, const vss::SnapshotSet& set);
    Status copy_disk(VmRun& vm, const vmwriter::PlannedDisk& disk,
                     const vss::SnapshotDevice& device, const ScratchWatch& watch);
    Status add_vm_files(VmRun& vm);
    void record_outcome(VmRun& vm);
    void drop_new_checkpoints();
    Error explain_copy_failure(const Error& error) const;
    Error resume_io_paused(const Error& error, const std::vector<bool>& paused_before) const;
    std::vector<std::shared_ptr<virt::Domain>> domains_of_runs() const {
        std::vector<std::shared_ptr<virt::Domain>> domains;
        for (const auto& r : runs_) domains.push_back(r.domain);
        return domains;
    }

    // A cancelled run's error: what was undone and which point is still the newest.
    Error cancelled_error(const Error& error) const;

    repo::Repository& repo_;
    const virt::Connection& connection_;
    const VmBackupOptions& options_;
    TaskContext idle_task_;
    TaskContext& task_;
    VmLock vm_lock_;  // first: released last, after the members below left the guests alone
    std::vector<VmRun> runs_;
    std::shared_ptr<vmwriter::PullBackupProvider> provider_;
    std::unique_ptr<repo::BackupSession> session_;
    std::unique_ptr<ScratchWatch> watch_;
    std::vector<bool> io_paused_before_;  // per run: paused by QEMU before the snapshot
};

Status BackupRun::run(const std::vector<std::string>& vms, const repo::PointListing& listing) {
    if (auto st = open(vms, listing); !st) return st;
    auto writers = make_writers();
    if (!writers) return std::unexpected(writers.error());
    vss::CoordinatorOptions co;
    co.vms = vms;
    co.state_file = options_.state_file;
    bool incremental = false;
    for (const auto& r : runs_) incremental = incremental || r.previous.document.has_value();
    co.backup_type =
        incremental && !options_.full ? vss::BackupType::incremental : vss::BackupType::full;
    vss::Coordinator coordinator(*writers, provider_, co);

    if (auto m = coordinator.gather_writer_metadata(); !m) return std::unexpected(m.error());
    if (auto st = coordinator.select_all_components(); !st) return st;
    if (auto st = task_.check_cancel("backup"); !st)
        return std::unexpected(cancelled_error(st.error()));
    for (const auto& r : runs_)
        if (r.previous.document && !options_.full)
            coordinator.inherit_backup_stamps(*r.previous.document);
    task_.phase("prepare");
    if (auto st = coordinator.prepare_for_backup(); !st) {
        finish_outcomes();
        return st;
    }
    if (auto st = task_.check_cancel("backup"); !st) {
        (void)coordinator.abort(st.error().message());
        finish_outcomes();
        return std::unexpected(cancelled_error(st.error()));
    }
    if (auto st = snapshot_and_copy(coordinator); !st) return st;
    return commit(coordinator);
}

// The VMs, their lock, the repository session and each VM's previous point: a locked
// repository or a VM busy with another operation fails before any guest is touched.
Status BackupRun::open(const std::vector<std::string>& vms, const repo::PointListing& listing) {
    for (const auto& name : vms) {
        VmRun r;
        r.outcome.vm = name;
        r.started = Clock::now();
        runs_.push_back(std::move(r));
    }
    for (auto& r : runs_) {
        auto domain = connection_.lookup(r.outcome.vm);
        if (!domain) return std::unexpected(domain.error());
        r.domain = std::make_shared<virt::Domain>(std::move(*domain));
        r.outcome.vm = r.domain->name();
    }
    // Before anything touches a guest: another operation on one of these VMs (a backup, a
    // restore) makes this one fail with a conflict naming it, the guest untouched.
    std::vector<VmLockKey> keys;
    for (const auto& r : runs_) keys.push_back({r.domain->name(), r.domain->uuid()});
    auto vm_lock = VmLock::acquire(keys, "backup");
    if (!vm_lock) return std::unexpected(vm_lock.error());
    vm_lock_ = std::move(*vm_lock);
    for (const auto& r : runs_)
        if (auto st = refuse_interrupted_restore(*r.domain); !st) return st;

    // The repository first: a locked or unreadable repository fails before any guest is
    // touched, and the session's index serves reading the previous points.
    repo::SessionOptions so;
    so.workers =
        options_.workers ? options_.workers : std::min(repo::kMaxWorkers, repo::default_workers());
    so.operation = "backup " + vms.front() + (vms.size() > 1 ? " (+ group)" : "");
    auto session = repo::BackupSession::begin(repo_, so);
    if (!session) return std::unexpected(session.error());
    session_ = std::move(*session);
    for (auto& r : runs_) {
        auto previous = find_previous(repo_, listing, r.domain->name());
        if (!previous)
            return std::unexpected(previous.error().with_context("vm '" + r.domain->name() +
                                                                 "': read its last restore point"));
        r.previous = std::move(*previous);
    }
    return {};
}

// A VM writer per VM, the configured exec writers, and the provider of the snapshot set.
Result<std::vector<std::shared_ptr<vss::Writer>>> BackupRun::make_writers() {
    std::vector<std::shared_ptr<vss::Writer>> writers;
    for (auto& r : runs_) {
        vmwriter::VmWriterOptions wo;
        wo.method = options_.method;
        wo.policy.allow_saved_state = options_.allow_saved_state;
        wo.freeze = options_.freeze;
        wo.scratch_dir = options_.scratch_dir;
        wo.runtime_dir = options_.runtime_dir;
        wo.repo_id = repo_.config().id;
        wo.include_disks = options_.disks;
        wo.exclude_disks = options_.exclude_disks;
        wo.group = options_.group && runs_.size() > 1;
        wo.force_full = options_.full;
        wo.previous_checkpoint_xml = r.previous.checkpoint_xml;
        wo.previous_disk_paths = r.previous.disk_paths;
        if (r.previous.point && !options_.full)
            follow_checkpoints(*r.domain, *r.previous.point, wo);
        r.writer = std::make_shared<vmwriter::VmWriter>(r.domain, std::move(wo));
        writers.push_back(r.writer);
    }
    if (!options_.writers_dir.empty()) {
        auto exec = vss::load_exec_writers(options_.writers_dir);
        if (!exec) return std::unexpected(exec.error());
        for (auto& w : *exec) writers.push_back(std::move(w));
    }
    provider_ = make_pull_provider(domains_of_runs(), options_.scratch_dir, options_.runtime_dir,
                                   options_.max_scratch);
    return writers;
}

void BackupRun::finish_outcomes() {
    for (auto& r : runs_) record_outcome(r);
}

// Phases "snapshot" and "copy": the snapshot set, then every disk read into the session,
// watched for a full scratch and a VM paused by QEMU. Any failure aborts (guest thawed, job
// ended, the run's checkpoint and scratch removed).
Status BackupRun::snapshot_and_copy(vss::Coordinator& coordinator) {
    task_.phase("snapshot");
    // From the snapshot on, a full scratch filesystem can make QEMU pause a VM (even inside
    // the thaw: the guest's thaw hook writes): every failure from here resumes such a VM once
    // the abort removed the job, the cause.
    io_paused_before_ = io_paused_now(domains_of_runs());
    auto set = coordinator.do_snapshot_set();
    if (!set) {
        finish_outcomes();
        return std::unexpected(resume_io_paused(set.error(), io_paused_before_));
    }
    // Out of the freeze window: the jobs' XML (export bitmaps) for the copy.
    if (auto st = provider_->describe_jobs(); !st) {
        (void)coordinator.abort(st.error().message());
        finish_outcomes();
        return std::unexpected(resume_io_paused(st.error(), io_paused_before_));
    }
    watch_ = std::make_unique<ScratchWatch>(*provider_, domains_of_runs(), options_.scratch_dir);
    auto copied = [&]() -> Status {
        for (auto& r : runs_)
            if (auto st = copy_vm(r, *set); !st) return st;
        if (auto st = task_.check_cancel("backup"); !st) return st;
        // A pause in the last moments of the copy: the watch may not have seen it yet.
        for (std::size_t i = 0; i < runs_.size(); ++i) {
            auto h = virt::vm_health(*runs_[i].domain);
            if (h && h->io_error_paused && !io_paused_before_[i]) {
                std::this_thread::sleep_for(milliseconds(250));
                return watch_->failure();
            }
        }
        return watch_->failure();
    }();
    watch_.reset();
    if (copied) return {};
    if (copied.error().kind() == ErrorKind::cancelled && task_.cancel().requested()) {
        (void)coordinator.abort(copied.error().message());
        finish_outcomes();
        return std::unexpected(
            resume_io_paused(cancelled_error(copied.error()), io_paused_before_));
    }
    Error error = explain_copy_failure(copied.error());
    (void)coordinator.abort(error.message());
    error = resume_io_paused(error, io_paused_before_);
    finish_outcomes();
    return std::unexpected(error);
}

// Phase "commit": BackupComplete to the writers, each point's files and manifest, the
// commit record, then the checkpoints the new points supersede retired.
Status BackupRun::commit(vss::Coordinator& coordinator) {
    task_.phase("commit", 0, runs_.size());
    test_pause_point("backup-commit");
    // Before BackupComplete, a cancel is an Abort: writers must not hear "complete" (a
    // database writer may truncate its logs on it) of a point that will not be kept.
    if (auto st = task_.check_cancel("backup"); !st) {
        (void)coordinator.abort(st.error().message());
        finish_outcomes();
        return std::unexpected(resume_io_paused(cancelled_error(st.error()), io_paused_before_));
    }
    if (auto st = coordinator.backup_complete(); !st) {
        finish_outcomes();
        return std::unexpected(resume_io_paused(st.error(), io_paused_before_));
    }
    note_paused_after_copy();
    if (auto st = describe_points(coordinator.document()); !st) {
        drop_new_checkpoints();
        return st;
    }
    test_pause_point("backup-commit-write");
    if (auto st = task_.check_cancel("backup"); !st) {
        drop_new_checkpoints();
        return std::unexpected(cancelled_error(st.error()));
    }
    auto committed = session_->commit();
    if (!committed) {
        drop_new_checkpoints();
        return std::unexpected(committed.error());
    }
    for (std::size_t i = 0; i < runs_.size() && i < committed->size(); ++i) {
        VmRun& r = runs_[i];
        const repo::RestorePoint& p = (*committed)[i];
        r.outcome.point = p.id.hex();
        r.outcome.bytes_added = p.bytes_added;
        for (auto& d : r.outcome.disks)
            if (const auto* rec = p.disk(d.target)) d.bytes_added = rec->bytes_added;
        r.outcome.seconds = std::chrono::duration<double>(Clock::now() - r.started).count();
        if (r.outcome.checkpoint) {
            auto retired = vmwriter::retire_superseded_checkpoints(*r.domain, repo_.config().id,
                                                                   *r.outcome.checkpoint);
            if (!retired) {
                r.outcome.notes.push_back("could not delete superseded checkpoints: " +
                                          retired.error().message());
            }
        }
    }
    return {};
}

// Paused after the copy read every byte: the point is complete (copy-before-write fails
// the guest's write, never the snapshot), but the user must hear of it.
void BackupRun::note_paused_after_copy() {
    for (std::size_t i = 0; i < runs_.size(); ++i) {
        auto h = virt::vm_health(*runs_[i].domain);
        if (!h || !h->io_error_paused || io_paused_before_[i]) continue;
        auto resumed = virt::resume_after_io_error(*runs_[i].domain);
        runs_[i].outcome.notes.push_back(
            "warning: QEMU paused the VM on a write error (" +
            (h->io_errors.empty() ? std::string("see `virsh domblkerror`") : h->io_errors) +
            ") after its disks were read: the restore point is complete; " +
            (resumed ? std::string("the VM was resumed")
                     : "the VM could not be resumed: " + resumed.error().message()));
    }
}

// Each point's backup document, checkpoint XML, metadata and timings.
Status BackupRun::describe_points(const vss::BackupDocument& document) {
    std::string document_text = nlohmann::json(document).dump(2);
    auto bytes = [](const std::string& text) {
        return repo::ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    };
    for (auto& r : runs_) {
        record_outcome(r);
        auto& m = r.point->manifest();
        m.consistency = r.outcome.consistency;
        if (auto st =
                r.point->add_file("backup-document.json", "backup_document", bytes(document_text));
            !st)
            return st;
        if (r.outcome.checkpoint) {
            auto xml = virt::checkpoint_xml(*r.domain, *r.outcome.checkpoint);
            if (!xml) return std::unexpected(xml.error());
            if (auto st = r.point->add_file("checkpoint.xml", "checkpoint_xml", bytes(*xml)); !st)
                return st;
        }
        m.metadata = {{"kind", "vm"},
                      {"uuid", r.domain->uuid()},
                      {"method", r.outcome.method},
                      {"reasons", r.outcome.reasons},
                      {"notes", r.outcome.notes},
                      {"skipped_disks", r.outcome.skipped},
                      {"backup_id", document.backup_id},
                      {"group", document.vms},
                      {"incremental_from", r.outcome.incremental_from
                                               ? nlohmann::json(*r.outcome.incremental_from)
                                               : nlohmann::json()},
                      {"checkpoint", r.outcome.checkpoint ? nlohmann::json(*r.outcome.checkpoint)
                                                          : nlohmann::json()}};
        auto ms = [](const std::optional<std::int64_t>& v) {
            return v ? nlohmann::json(*v) : nlohmann::json();
        };
        m.timings = {{"freeze_window_ms", ms(r.outcome.freeze_ms)},
                     {"quiesce_ms", ms(r.outcome.quiesce_ms)},
                     {"paused_ms", ms(r.outcome.paused_ms)},
                     {"total_s", std::chrono::duration<double>(Clock::now() - r.started).count()}};
    }
    return {};
}

void BackupRun::record_outcome(VmRun& r) {
    if (!r.writer) return;
    vmwriter::VmWriterOutcome w = r.writer->outcome();
    r.outcome.method = std::string(vmwriter::method_name(w.method));
    r.outcome.consistency = w.consistency;
    r.outcome.reasons = w.reasons;
    for (const auto& n : w.notes)
        if (std::find(r.outcome.notes.begin(), r.outcome.notes.end(), n) == r.outcome.notes.end())
            r.outcome.notes.push_back(n);
    if (w.freeze_window) r.outcome.freeze_ms = w.freeze_window->count();
    if (w.quiesce) r.outcome.quiesce_ms = w.quiesce->count();
    if (w.paused) r.outcome.paused_ms = w.paused->count();
    if (auto plan = r.writer->plan()) {
        r.outcome.incremental_from = plan->incremental_from;
        r.outcome.checkpoint = plan->new_checkpoint;
        r.outcome.skipped.clear();
        for (const auto& s : plan->skipped)
            r.outcome.skipped.push_back(s.target + " (" + s.reason + ")");
    }
}

// A copy that failed because its VM stopped reads as an NBD disconnect: say the VM stopped.
Error BackupRun::explain_copy_failure(const Error& error) const {
    for (const auto& r : runs_) {
        auto h = virt::vm_health(*r.domain);
        if (!h || !h->stopped()) continue;
        if (error.message().find(" stopped during the backup") != std::string::npos) return error;
        return Error(ErrorKind::unavailable,
                     r.domain->label() + " stopped during the backup (it is " +
                         std::string(virt::state_name(h->state)) +
                         " now), so its disks could not be read: " + error.message());
    }
    return error;
}

Error BackupRun::resume_io_paused(const Error& error,
                                  const std::vector<bool>& paused_before) const {
    return engine::resume_io_paused(error, domains_of_runs(), paused_before, options_.scratch_dir);
}

void BackupRun::drop_new_checkpoints() {
    // Nothing will reference them: each would record every guest write for nothing, and
    // the next incremental must not start from a point that was never stored.
    for (auto& r : runs_) {
        if (r.outcome.checkpoint)
            (void)virt::delete_own_checkpoint(*r.domain, *r.outcome.checkpoint);
    }
}

Status BackupRun::copy_vm(VmRun& r, const vss::SnapshotSet& set) {
    record_outcome(r);
    auto plan = r.writer->plan();
    if (!plan) return fail(ErrorKind::internal, r.domain->label() + ": no backup plan");
    const vss::ComponentSnapshot* snapshot = nullptr;
    for (const auto& s : set.snapshots)
        if (s.component == r.writer->component_key()) snapshot = &s;
    if (!snapshot)
        return fail(ErrorKind::internal, r.domain->label() + ": not in the snapshot set");
    r.point = &session_->add_point(r.domain->name(), r.outcome.consistency);
    for (const auto& disk : plan->disks) {
        const vss::SnapshotDevice* device = nullptr;
        for (const auto& d : snapshot->devices)
            if (d.device == disk.target) device = &d;
        if (!device)
            return fail(ErrorKind::internal,
                        r.domain->label() + ", disk " + disk.target + ": no snapshot device");
        if (auto st = copy_disk(r, disk, *device, *watch_); !st) return st;
    }
    return add_vm_files(r);
}

Status BackupRun::copy_disk(VmRun& r, const vmwriter::PlannedDisk& disk,
                            const vss::SnapshotDevice& device, const ScratchWatch& watch) {
    const std::string label = r.domain->label() + ", disk " + disk.target;
    std::unique_ptr<QemuNbdServer> server;  // offline: qemu-nbd on the image itself
    virt::NbdExport::Options eo;
    eo.label = label;
    const virt::BackupExport* job_export = nullptr;
    if (device.access.rfind("file:", 0) == 0) {
        auto started = QemuNbdServer::start({device.access.substr(5), disk.format, true, 1});
        if (!started) return std::unexpected(started.error().with_context(label));
        server = std::move(*started);
        eo.socket = server->socket();
    } else if (!parse_nbd_access(device.access, eo.export_name, eo.socket)) {
        return fail(ErrorKind::internal, label + ": cannot read snapshot at " + device.access);
    } else if (virt::BackupJob* job = provider_->job(r.domain->name())) {
        job_export = job->find_export(disk.target);
        if (job_export) eo.export_name = job_export->export_name;  // as libvirt named it
    }
    const repo::RestorePoint* base = r.previous.point;
    const repo::DiskRecord* base_disk = base ? base->disk(disk.target) : nullptr;
    // `unchanged` ranges come from the base point: only when it is the point whose
    // checkpoint this incremental starts from and it holds the disk at the same size.
    bool incremental = disk.incremental && job_export && job_export->incremental && base_disk;
    if (incremental) eo.dirty_context = job_export->dirty_context();
    auto source = virt::NbdExport::connect(eo);
    // qemu-nbd (offline) creates its socket a moment after it starts.
    for (int i = 0; server && !source && i < 200; ++i) {
        std::this_thread::sleep_for(milliseconds(50));
        source = virt::NbdExport::connect(eo);
    }
    if (!source) return std::unexpected(source.error());
    if (incremental && base_disk->size != source->size()) {
        eo.dirty_context.clear();
        incremental = false;
        source = virt::NbdExport::connect(eo);
        if (!source) return std::unexpected(source.error());
    }
    nlohmann::json info{{"path", disk.path},
                        {"format", disk.format},
                        {"mode", incremental ? "incremental" : "full"}};
    if (!disk.full_reason.empty()) info["full_reason"] = disk.full_reason;
    auto writer = r.point->add_disk(disk.target, source->size(), base, info);
    if (!writer) return std::unexpected(writer.error().with_context(label));
    CopyControl control;
    control.check = [&watch, &label, this]() -> Status {
        if (auto st = watch.failure(); !st) return st;
        if (auto e = session_->error()) return std::unexpected(*e);
        return task_.check_cancel(label + ": copy");
    };
    const std::uint64_t total = source->size();
    task_.phase("copy", total, 0, r.domain->name() + "/" + disk.target);
    test_kill_point("backup-copy");  // tests: a kill -9 of vmshadow or vmshadowd mid-copy
    control.progress = [this](std::uint64_t done) { task_.bytes_done(done); };
    auto read = copy_export(*source, **writer, control);
    if (!read) return std::unexpected(read.error());
    if (auto st = (*writer)->finish(); !st) return std::unexpected(st.error().with_context(label));
    DiskOutcome d;
    d.target = disk.target;
    d.mode = incremental ? "incremental" : "full";
    d.note = disk.full_reason;
    d.size = total;
    d.bytes_read = *read;
    r.outcome.bytes_read += *read;
    r.outcome.disks.push_back(std::move(d));
    return {};
}

Result<std::string> read_host_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return fail(ErrorKind::io, path + ": cannot read it");
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return fail(ErrorKind::io, path + ": read failed");
    return data;
}

Status BackupRun::add_vm_files(VmRun& r) {
    auto add_text = [&](const std::string& name, const std::string& role,
                        const std::string& text) -> Status {
        return r.point->add_file(
            name, role,
            repo::ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    };
    auto inactive = r.domain->xml(virt::XmlFlavor::inactive);
    if (!inactive) return std::unexpected(inactive.error());
    if (auto st = add_text("domain.xml", "domain_xml", *inactive); !st) return st;
    auto live = r.domain->xml(virt::XmlFlavor::live);
    if (live) {
        if (auto st = add_text("domain-live.xml", "domain_xml_live", *live); !st) return st;
    }
    auto desc = r.domain->describe();
    if (!desc) return std::unexpected(desc.error());
    for (const auto& [role, path] : desc->boot.by_role()) {
        auto content = read_host_file(path);
        if (!content) return std::unexpected(content.error().with_context(r.domain->label()));
        std::string name = role + "-" + std::filesystem::path(path).filename().string();
        if (auto st = add_text(name, role, *content); !st) return st;
    }
    auto plan = r.writer->plan();
    if (plan && !plan->memory_file.empty()) {
        // The memory image can be as large as the VM's RAM: stream it in chunk-sized pieces.
        std::ifstream in(plan->memory_file, std::ios::binary);
        std::error_code ec;
        auto size = std::filesystem::file_size(plan->memory_file, ec);
        if (!in || ec)
            return fail(ErrorKind::io,
                        r.domain->label() + ": memory image " + plan->memory_file + " is missing");
        auto writer = r.point->add_file("memory.save", "memory", size);
        if (!writer) return std::unexpected(writer.error());
        const std::uint64_t piece = std::max<std::uint64_t>((*writer)->chunk_size(), 4ull << 20) /
                                    (*writer)->chunk_size() * (*writer)->chunk_size();
        for (std::uint64_t off = 0; off < size; off += piece) {
            repo::Bytes buffer(std::min(piece, size - off));
            in.read(reinterpret_cast<char*>(buffer.data()),
                    static_cast<std::streamsize>(buffer.size()));
            if (!in)
                return fail(ErrorKind::io,
                            r.domain->label() + ": read memory image " + plan->memory_file);
            if (auto st = (*writer)->write(off, std::move(buffer)); !st) return st;
        }
        if (auto st = (*writer)->finish(); !st) return st;
        std::filesystem::remove(plan->memory_file, ec);
    }
    return {};
}

}  // namespace

Error BackupRun::cancelled_error(const Error& error) const {
    std::string message = error.message() +
                          ": nothing was kept (guest thawed, backup job ended, "
                          "its checkpoint and scratch removed)";
    for (const auto& r : runs_) {
        if (r.previous.point)
            message += "; " + r.outcome.vm + "'s last restore point " +
                       r.previous.point->id.hex().substr(0, 12) +
                       " is intact and the next backup continues from it";
        else
            message += "; " + r.outcome.vm + " has no earlier restore point";
    }
    return Error(ErrorKind::cancelled, message);
}

VmBackupReport backup_vms(repo::Repository& repo, const virt::Connection& connection,
                          const VmBackupOptions& options) {
    VmBackupReport report;
    if (options.vms.empty()) {
        report.error = Error(ErrorKind::invalid_argument, "no VM given: name at least one");
        return report;
    }
    std::vector<std::vector<std::string>> runs;
    if (options.group) {
        runs.push_back(options.vms);
    } else {
        for (const auto& vm : options.vms) runs.push_back({vm});
    }
    for (const auto& vms : runs) {
        if (options.task && options.task->cancel().requested()) {
            for (const auto& vm : vms) {
                VmBackupOutcome o;
                o.vm = vm;
                o.error = Error(ErrorKind::cancelled, "vm '" + vm + "': not started (cancelled)");
                report.vms.push_back(std::move(o));
            }
            if (!report.error) report.error = report.vms.back().error;
            continue;
        }
        auto listing = repo.list_points();
        BackupRun run(repo, connection, options);
        Status st = listing ? run.run(vms, *listing) : Status(std::unexpected(listing.error()));
        auto outcomes = run.outcomes();
        for (auto& o : outcomes) {
            if (!st) {
                o.error = st.error();
                o.point.reset();
                o.bytes_added = 0;
            }
            report.vms.push_back(std::move(o));
        }
        if (!st && !report.error) report.error = st.error();
    }
    return report;
}

}  // namespace vmshadow::engine
