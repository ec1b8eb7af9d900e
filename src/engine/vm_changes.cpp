// SPDX-License-Identifier: MIT
#include "engine/vm_changes.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>

#include "common/time_format.h"
#include "engine/change_bitmaps.h"
#include "engine/checkpoint_tracking.h"
#include "engine/nbd_image.h"
#include "engine/restore_journal.h"
#include "engine/snapshot_run.h"
#include "engine/vm_lock.h"
#include "virt/checkpoints.h"
#include "virt/domain_xml.h"
#include "virt/nbd_export.h"
#include "virt/qemu_img.h"
#include "virt/vm_health.h"
#include "vmwriter/pull_backup_provider.h"
#include "vmwriter/vm_writer.h"
#include "vss/coordinator.h"

namespace vmshadow::engine {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using Check = std::function<Status()>;

std::string now_iso8601() {
    return iso8601_utc(std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
}

std::string join(const std::vector<std::string>& parts, const std::string& separator) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : separator) + p;
    return out;
}

// Delivers every range of `source` to the sink, in offset order: data read with several
// requests in flight, zero ranges as zero(). `check` runs between pieces.
Status deliver_export(virt::NbdExport& source, std::size_t disk, ChangeSink& sink,
                      const Check& check, TaskContext& task, std::uint64_t& bytes_read) {
    std::vector<virt::ExportRange> data;
    auto read_data = [&]() -> Status {
        if (data.empty()) return {};
        auto st = source.read(data, [&](std::uint64_t offset, std::span<const std::byte> bytes) {
            if (auto c = check(); !c) return c;
            bytes_read += bytes.size();
            return sink.data(disk, offset, bytes);
        });
        data.clear();
        return st;
    };
    for (;;) {
        if (auto st = check(); !st) return st;
        auto ranges = source.next_ranges();
        if (!ranges) return std::unexpected(ranges.error());
        if (!*ranges) return {};
        for (const auto& r : **ranges) {
            if (r.kind == virt::ExportRange::Kind::data) {
                data.push_back(r);
                continue;
            }
            if (auto st = read_data(); !st) return st;
            if (auto st = sink.zero(disk, r.offset, r.length); !st) return st;
        }
        if (auto st = read_data(); !st) return st;
        task.bytes_done(source.walked());
    }
}

// qemu-nbd creates its socket a moment after it starts.
Result<virt::NbdExport> connect_retrying(const virt::NbdExport::Options& options) {
    auto source = virt::NbdExport::connect(options);
    for (int i = 0; !source && i < 200; ++i) {
        std::this_thread::sleep_for(milliseconds(50));
        source = virt::NbdExport::connect(options);
    }
    return source;
}

Status check_chain_id(const std::string& chain_id) {
    bool hex = chain_id.size() >= 8 && std::all_of(chain_id.begin(), chain_id.end(), [](char c) {
                   return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
               });
    if (!hex)
        return fail(ErrorKind::invalid_argument,
                    "chain id '" + chain_id + "': give at least 8 lower-case hex characters");
    return {};
}

bool excluded(const ChangeReadOptions& options, const std::string& target) {
    return std::find(options.exclude_disks.begin(), options.exclude_disks.end(), target) !=
           options.exclude_disks.end();
}

// What both reads share: the options, the VM, its lock, the outcome being filled.
struct ReadContext {
    const ChangeReadOptions& options;
    ChangeSink& sink;
    TaskContext& task;
    std::shared_ptr<virt::Domain> domain;
    std::string previous;  // the previous checkpoint's name; empty: none
    ChangeReadOutcome outcome;
    std::string full_reason;  // why options.force_full when the caller did not ask for it
    Clock::time_point started = Clock::now();
};

std::string asked_full(const ReadContext& c) {
    return c.full_reason.empty() ? "a full read was asked" : c.full_reason;
}

// ---- A running VM: the VSS flow with the VM writer and the pull-mode provider ----------

class LiveRead {
  public:
    explicit LiveRead(ReadContext& c) : c_(c) {}
    Status run();

  private:
    std::shared_ptr<vmwriter::VmWriter> make_writer() const;
    Status read_disks(const vss::SnapshotSet& set, const ScratchWatch& watch);
    Status finish_after_commit(vss::Coordinator& coordinator);
    void record_writer_outcome();

    ReadContext& c_;
    std::shared_ptr<vmwriter::VmWriter> writer_;
    std::shared_ptr<vmwriter::PullBackupProvider> provider_;
    std::vector<bool> paused_before_;
};

std::shared_ptr<vmwriter::VmWriter> LiveRead::make_writer() const {
    const auto& o = c_.options;
    vmwriter::VmWriterOptions wo;
    // Crash-consistent unless asked: auto without saved state is the agent's freeze when it
    // can, crash consistency (with the reason) when it cannot.
    if (!o.application_consistent) wo.method = vmwriter::BackupMethod::crash;
    wo.policy.allow_saved_state = false;
    wo.freeze = o.freeze;
    wo.scratch_dir = o.scratch_dir;
    wo.runtime_dir = o.runtime_dir;
    wo.repo_id = o.chain_id;  // the checkpoints are this chain's: vmshadow-<chain8>-<time>
    wo.exclude_disks = o.exclude_disks;
    wo.force_full = o.force_full;
    wo.full_reason = c_.full_reason;
    wo.previous_checkpoint_xml = o.previous_checkpoint_xml;
    // The disks as they are now: a replaced disk has none of the checkpoint's bitmaps, so the
    // checkpoint's health check sends it to a full read all the same.
    if (auto desc = c_.domain->describe())
        for (const auto& d : desc->disks) wo.previous_disk_paths.emplace_back(d.target, d.path);
    return std::make_shared<vmwriter::VmWriter>(c_.domain, std::move(wo));
}

void LiveRead::record_writer_outcome() {
    vmwriter::VmWriterOutcome w = writer_->outcome();
    c_.outcome.set.consistency = w.consistency == "application" ? "application" : "crash";
    if (w.freeze_window) c_.outcome.freeze_ms = w.freeze_window->count();
    std::vector<std::string> notes = w.notes;
    if (c_.options.application_consistent && w.consistency != "application")
        notes.insert(notes.begin(), "application consistency asked but not had (" +
                                        join(w.reasons, "; ") + "): crash-consistent");
    for (const auto& n : notes)
        if (std::find(c_.outcome.notes.begin(), c_.outcome.notes.end(), n) ==
            c_.outcome.notes.end())
            c_.outcome.notes.push_back(n);
}

Status LiveRead::run() {
    const auto& o = c_.options;
    writer_ = make_writer();
    provider_ = make_pull_provider({c_.domain}, o.scratch_dir, o.runtime_dir, o.max_scratch);
    vss::CoordinatorOptions co;
    co.vms = {c_.domain->name()};
    const bool incremental = !c_.previous.empty() && !o.force_full;
    co.backup_type = incremental ? vss::BackupType::incremental : vss::BackupType::full;
    vss::Coordinator coordinator({writer_}, provider_, co);
    if (auto m = coordinator.gather_writer_metadata(); !m) return std::unexpected(m.error());
    if (auto st = coordinator.select_all_components(); !st) return st;
    if (incremental) {
        // The previous "backup" of this chain is the checkpoint the caller kept.
        vss::BackupDocument previous;
        vss::ComponentEntry entry;
        entry.key = writer_->component_key();
        entry.backup_stamp = c_.previous;
        previous.components.push_back(std::move(entry));
        coordinator.inherit_backup_stamps(previous);
    }
    if (auto st = c_.task.check_cancel("change read"); !st) return st;
    c_.task.phase("prepare");
    if (auto st = coordinator.prepare_for_backup(); !st) return st;
    if (auto st = c_.task.check_cancel("change read"); !st) {
        (void)coordinator.abort(st.error().message());
        return st;
    }
    c_.task.phase("snapshot");
    paused_before_ = io_paused_now({c_.domain});
    auto resumed = [&](const Error& e) {
        return std::unexpected(resume_io_paused(e, {c_.domain}, paused_before_, o.scratch_dir));
    };
    auto set = coordinator.do_snapshot_set();
    if (!set) return resumed(set.error());
    c_.outcome.set.time = now_iso8601();
    record_writer_outcome();
    auto read = [&]() -> Status {
        if (auto st = provider_->describe_jobs(); !st) return st;
        ScratchWatch watch(*provider_, {c_.domain}, o.scratch_dir);
        if (auto st = read_disks(*set, watch); !st) return st;
        return watch.failure();
    }();
    if (!read) {
        (void)coordinator.abort(read.error().message());
        return resumed(read.error());
    }
    return finish_after_commit(coordinator);
}

// Every planned disk's export, then begin, each disk's extents, and commit.
Status LiveRead::read_disks(const vss::SnapshotSet& set, const ScratchWatch& watch) {
    auto plan = writer_->plan();
    if (!plan) return fail(ErrorKind::internal, c_.domain->label() + ": no backup plan");
    const vss::ComponentSnapshot* snapshot = nullptr;
    for (const auto& s : set.snapshots)
        if (s.component == writer_->component_key()) snapshot = &s;
    if (!snapshot)
        return fail(ErrorKind::internal, c_.domain->label() + ": not in the snapshot set");
    ChangeSet& cs = c_.outcome.set;
    cs.base = plan->incremental_from;
    cs.checkpoint = plan->new_checkpoint.value_or("");
    virt::BackupJob* job = provider_->job(c_.domain->name());
    std::vector<virt::NbdExport> sources;
    for (const auto& disk : plan->disks) {
        const std::string label = c_.domain->label() + ", disk " + disk.target;
        const vss::SnapshotDevice* device = nullptr;
        for (const auto& d : snapshot->devices)
            if (d.device == disk.target) device = &d;
        virt::NbdExport::Options eo;
        eo.label = label;
        if (!device || !job || !parse_nbd_access(device->access, eo.export_name, eo.socket))
            return fail(ErrorKind::unavailable,
                        label + ": no live export (did the VM stop?): read it again");
        const virt::BackupExport* job_export = job->find_export(disk.target);
        if (job_export) eo.export_name = job_export->export_name;
        const bool incremental = disk.incremental && job_export && job_export->incremental;
        if (incremental) eo.dirty_context = job_export->dirty_context();
        auto source = virt::NbdExport::connect(eo);
        if (!source) return std::unexpected(source.error());
        ChangeDisk cd{disk.target, source->size(), incremental, disk.full_reason};
        if (!incremental && !c_.previous.empty() && cd.full_reason.empty())
            cd.full_reason = c_.options.force_full ? asked_full(c_)
                             : plan->chain_notes.empty()
                                 ? "checkpoint " + c_.previous + " could not be used"
                                 : join(plan->chain_notes, "; ");
        cs.disks.push_back(std::move(cd));
        sources.push_back(std::move(*source));
    }
    if (!cs.checkpoint.empty()) {
        auto xml = virt::checkpoint_xml(*c_.domain, cs.checkpoint);
        if (!xml) return std::unexpected(xml.error());
        c_.outcome.checkpoint_xml = std::move(*xml);
    }
    if (auto st = c_.sink.begin(cs); !st) return st;
    Check check = [&]() -> Status {
        if (auto st = watch.failure(); !st) return st;
        return c_.task.check_cancel("change read");
    };
    for (std::size_t i = 0; i < sources.size(); ++i) {
        c_.task.phase("copy", sources[i].size(), 0, c_.domain->name() + "/" + cs.disks[i].target);
        if (auto st = deliver_export(sources[i], i, c_.sink, check, c_.task, c_.outcome.bytes_read);
            !st)
            return st;
    }
    // A pause in the last moments of the read: the watch may not have seen it yet.
    auto h = virt::vm_health(*c_.domain);
    if (h && h->io_error_paused && !paused_before_.front())
        std::this_thread::sleep_for(milliseconds(250));
    if (auto st = check(); !st) return st;
    c_.task.phase("commit");
    return c_.sink.commit();
}

// The sink has every extent: BackupComplete (the job ends), then the chain's older
// checkpoints go.
Status LiveRead::finish_after_commit(vss::Coordinator& coordinator) {
    if (auto st = coordinator.backup_complete(); !st) {
        // The caller will not record the new checkpoint: it would record writes for nothing.
        if (!c_.outcome.set.checkpoint.empty())
            (void)virt::delete_own_checkpoint(*c_.domain, c_.outcome.set.checkpoint);
        return std::unexpected(
            resume_io_paused(st.error(), {c_.domain}, paused_before_, c_.options.scratch_dir));
    }
    record_writer_outcome();
    if (auto h = virt::vm_health(*c_.domain); h && h->io_error_paused && !paused_before_.front()) {
        auto resumed = virt::resume_after_io_error(*c_.domain);
        c_.outcome.notes.push_back(
            "warning: QEMU paused the VM on a write error after its disks were read: the "
            "changes are complete; " +
            (resumed ? std::string("the VM was resumed")
                     : "the VM could not be resumed: " + resumed.error().message()));
    }
    if (!c_.outcome.set.checkpoint.empty()) {
        auto retired = vmwriter::retire_superseded_checkpoints(*c_.domain, c_.options.chain_id,
                                                               c_.outcome.set.checkpoint);
        if (!retired)
            c_.outcome.notes.push_back("could not delete superseded checkpoints: " +
                                       retired.error().message());
    }
    return {};
}

// ---- A shut-off VM: the chain's bitmaps merged and served by qemu-nbd ------------------

// A merged bitmap in one qcow2, removed when it goes (also on failure).
class TemporaryBitmap {
  public:
    TemporaryBitmap(std::string path, std::string name)
        : path_(std::move(path)), name_(std::move(name)) {}
    ~TemporaryBitmap() { (void)virt::remove_image_bitmap(path_, name_); }
    TemporaryBitmap(const TemporaryBitmap&) = delete;
    TemporaryBitmap& operator=(const TemporaryBitmap&) = delete;

  private:
    std::string path_, name_;
};

// One disk being read: members in this order so that the connection closes first, then the
// server stops, then the bitmap goes.
struct OfflineDisk {
    std::unique_ptr<TemporaryBitmap> bitmap;
    std::unique_ptr<QemuNbdServer> server;
    std::optional<virt::NbdExport> source;
};

class OfflineRead {
  public:
    explicit OfflineRead(ReadContext& c) : c_(c) {}
    Status run();

  private:
    // Why the chain cannot be followed; empty when it can (`checkpoints` then filled).
    std::string check_chain();
    Status open_disk(const virt::DiskSpec& spec, ChangeDisk& cd, OfflineDisk& od);

    ReadContext& c_;
    std::vector<virt::CheckpointInfo> checkpoints_;
};

std::string OfflineRead::check_chain() {
    if (c_.previous.empty()) return "";
    if (c_.options.force_full) return asked_full(c_);
    auto found = virt::find_checkpoint(*c_.domain, c_.previous);
    if (found && !*found && !c_.options.previous_checkpoint_xml.empty()) {
        if (auto st = virt::redefine_checkpoint(*c_.domain, c_.options.previous_checkpoint_xml))
            c_.outcome.notes.push_back("checkpoint " + c_.previous +
                                       " was missing from libvirt: redefined from its XML");
    }
    auto health = virt::check_checkpoint(*c_.domain, c_.previous);
    if (!health) return "checkpoint " + c_.previous + ": " + health.error().message();
    if (!health->usable()) return "checkpoint " + c_.previous + ": " + health->reason;
    auto all = virt::list_checkpoints(*c_.domain);
    if (!all) return all.error().message();
    checkpoints_ = std::move(*all);
    return "";
}

Status OfflineRead::open_disk(const virt::DiskSpec& spec, ChangeDisk& cd, OfflineDisk& od) {
    const std::string label = c_.domain->label() + ", disk " + spec.target;
    QemuNbdServer::Options so{spec.path, spec.format, true, 1, ""};
    virt::NbdExport::Options eo;
    eo.label = label;
    if (cd.incremental) {
        auto sources = bitmaps_since(checkpoints_, c_.previous, spec.target);
        const std::string name = merged_bitmap_name(c_.options.chain_id);
        auto added = virt::add_merged_bitmap(spec.path, name, *sources);
        if (!added && added.error().kind() == ErrorKind::conflict) {
            // Left by a read that was killed: it is ours, by name.
            (void)virt::remove_image_bitmap(spec.path, name);
            added = virt::add_merged_bitmap(spec.path, name, *sources);
        }
        if (!added) return std::unexpected(added.error().with_context(label));
        od.bitmap = std::make_unique<TemporaryBitmap>(spec.path, name);
        so.bitmap = name;
        eo.dirty_context = "qemu:dirty-bitmap:" + name;
    }
    auto server = QemuNbdServer::start(so);
    if (!server) return std::unexpected(server.error().with_context(label));
    od.server = std::move(*server);
    eo.socket = od.server->socket();
    auto source = connect_retrying(eo);
    if (!source) return std::unexpected(source.error());
    cd.size = source->size();
    od.source.emplace(std::move(*source));
    return {};
}

Status OfflineRead::run() {
    auto desc = c_.domain->describe();
    if (!desc) return std::unexpected(desc.error());
    const std::string chain_problem = check_chain();
    ChangeSet& cs = c_.outcome.set;
    cs.consistency = "crash";
    cs.time = now_iso8601();
    cs.checkpoint = c_.previous;
    c_.outcome.checkpoint_xml = c_.options.previous_checkpoint_xml;
    c_.outcome.notes.push_back("read from the shut-off VM's disk images");
    std::vector<const virt::DiskSpec*> specs;
    for (const auto& d : desc->disks) {
        if (!virt::disk_is_backed_up(d) || excluded(c_.options, d.target)) continue;
        ChangeDisk cd;
        cd.target = d.target;
        if (!c_.previous.empty()) {
            if (!chain_problem.empty())
                cd.full_reason = chain_problem;
            else if (d.format != "qcow2")
                cd.full_reason = d.format + " image: no dirty bitmaps";
            else if (!bitmaps_since(checkpoints_, c_.previous, d.target))
                cd.full_reason = "disk added since checkpoint " + c_.previous;
            else
                cd.incremental = true;
        }
        if (!cd.incremental && !cd.full_reason.empty())
            c_.outcome.notes.push_back(d.target + ": read in full (" + cd.full_reason + ")");
        if (cd.incremental) cs.base = c_.previous;
        cs.disks.push_back(std::move(cd));
        specs.push_back(&d);
    }
    std::vector<OfflineDisk> disks(specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i)
        if (auto st = open_disk(*specs[i], cs.disks[i], disks[i]); !st) return st;
    if (auto st = c_.sink.begin(cs); !st) return st;
    Check check = [&]() -> Status { return c_.task.check_cancel("change read"); };
    for (std::size_t i = 0; i < disks.size(); ++i) {
        c_.task.phase("copy", cs.disks[i].size, 0, c_.domain->name() + "/" + cs.disks[i].target);
        if (auto st =
                deliver_export(*disks[i].source, i, c_.sink, check, c_.task, c_.outcome.bytes_read);
            !st)
            return st;
    }
    if (auto st = check(); !st) return st;
    c_.task.phase("commit");
    return c_.sink.commit();
}

bool is_shut_off(const virt::Domain& domain) {
    auto state = domain.state();
    return state && (*state == virt::DomainState::shutoff || *state == virt::DomainState::crashed);
}

}  // namespace

Result<ChangeReadOutcome> read_vm_changes(const virt::Connection& connection,
                                          const ChangeReadOptions& options, ChangeSink& sink) {
    if (auto st = check_chain_id(options.chain_id); !st) return std::unexpected(st.error());
    std::string previous;
    std::int64_t previous_time = 0;
    if (!options.previous_checkpoint_xml.empty()) {
        auto info = virt::parse_checkpoint_xml(options.previous_checkpoint_xml);
        if (!info)
            return std::unexpected(info.error().with_context("the chain's last checkpoint XML"));
        previous = info->name;
        previous_time = info->creation_time;
    }
    auto domain = connection.lookup(options.vm);
    if (!domain) return std::unexpected(domain.error());
    TaskContext idle;
    ChangeReadOptions effective = options;
    ReadContext c{effective,
                  sink,
                  options.task ? *options.task : idle,
                  std::make_shared<virt::Domain>(std::move(*domain)),
                  previous,
                  {}};
    // Before anything touches the guest: a backup or restore of this VM running now makes
    // this read fail with a conflict, the guest untouched.
    auto lock = VmLock::acquire({{c.domain->name(), c.domain->uuid()}}, "replica change read");
    if (!lock) return std::unexpected(lock.error());
    if (auto st = refuse_interrupted_restore(*c.domain); !st) return std::unexpected(st.error());
    // Under the lock (no checkpoint operation in between): the VM's checkpoint operations
    // since the chain's last checkpoint may have broken its dirty bitmaps' history
    // (checkpoint_tracking.h); then a full read that says why.
    if (!previous.empty() && !options.force_full) {
        auto tree = load_checkpoint_tree(c.domain->uuid());
        std::optional<std::string> broken =
            tree ? checkpoint_tracking_broken(*tree, previous_time)
                 : std::optional<std::string>("its checkpoint record could not be read (" +
                                              tree.error().message() + ")");
        if (broken) {
            effective.force_full = true;
            c.full_reason = *broken;
        }
    }
    c.outcome.set.vm = c.domain->name();
    c.outcome.set.uuid = c.domain->uuid();
    auto inactive = c.domain->xml(virt::XmlFlavor::inactive);
    if (!inactive) return std::unexpected(inactive.error());
    c.outcome.set.domain_xml = std::move(*inactive);
    Status st;
    if (is_shut_off(*c.domain)) {
        OfflineRead read(c);
        st = read.run();
    } else {
        LiveRead read(c);
        st = read.run();
    }
    if (!st) return std::unexpected(st.error());
    c.outcome.seconds = std::chrono::duration<double>(Clock::now() - c.started).count();
    return std::move(c.outcome);
}

Status delete_chain(const virt::Connection& connection, const std::string& vm,
                    const std::string& chain_id) {
    if (auto st = check_chain_id(chain_id); !st) return st;
    auto domain = connection.lookup(vm);
    if (!domain) return std::unexpected(domain.error());
    auto lock = VmLock::acquire({{domain->name(), domain->uuid()}}, "replica chain removal");
    if (!lock) return std::unexpected(lock.error());
    auto all = virt::list_checkpoints(*domain);
    if (!all) return std::unexpected(all.error());
    // Newest first: no checkpoint of the chain is ever left with a deleted parent.
    for (auto it = all->rbegin(); it != all->rend(); ++it) {
        if (!virt::checkpoint_belongs_to(it->name, chain_id)) continue;
        if (auto st = virt::delete_checkpoint(*domain, it->name, chain_id); !st) return st;
    }
    return {};
}

}  // namespace vmshadow::engine
