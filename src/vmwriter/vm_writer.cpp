// SPDX-License-Identifier: MIT
#include "vmwriter/vm_writer.h"

#include <algorithm>
#include <filesystem>

#include "virt/backup_job.h"
#include "virt/checkpoints.h"
#include "virt/memory_image.h"
#include "vmwriter/vm_facts.h"

namespace vmshadow::vmwriter {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string join(const std::vector<std::string>& items, std::string_view sep) {
    std::string out;
    for (const auto& s : items) {
        if (!out.empty()) out += sep;
        out += s;
    }
    return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

std::string consistency_of(BackupMethod method) {
    return method == BackupMethod::none ? "crash" : std::string(method_name(method));
}

// --disk / --exclude-disk against the VM's disks; unknown targets are an error, since a
// typo would otherwise silently back up less than asked.
Status select_disks(const VmFacts& facts, const VmWriterOptions& options, VmBackupPlan& plan,
                    const std::string& label) {
    std::vector<std::string> targets;
    for (const auto& d : facts.disks) targets.push_back(d.spec.target);
    for (const auto* list : {&options.include_disks, &options.exclude_disks}) {
        for (const auto& t : *list) {
            if (!contains(targets, t)) {
                return fail(ErrorKind::not_found, label + " has no disk '" + t +
                                                      "' (its disks: " + join(targets, ", ") + ")");
            }
        }
    }
    for (const auto& d : facts.disks) {
        const std::string& t = d.spec.target;
        if (!d.backed_up) {
            plan.skipped.push_back({t, d.skip_reason});
        } else if (!options.include_disks.empty() && !contains(options.include_disks, t)) {
            plan.skipped.push_back({t, "not selected with --disk"});
        } else if (contains(options.exclude_disks, t)) {
            plan.skipped.push_back({t, "excluded with --exclude-disk"});
        } else {
            PlannedDisk p;
            p.target = t;
            p.path = d.spec.path;
            p.format = d.spec.format.empty() ? "raw" : d.spec.format;
            p.size = d.sizes ? d.sizes->capacity : 0;
            plan.disks.push_back(std::move(p));
        }
    }
    if (plan.disks.empty()) {
        return fail(ErrorKind::invalid_argument,
                    label + ": no disk left to back up (" +
                        (plan.skipped.empty() ? std::string("it has none")
                                              : "every disk is skipped or excluded") +
                        ")");
    }
    return {};
}

}  // namespace

VmWriter::VmWriter(std::shared_ptr<virt::Domain> domain, VmWriterOptions options)
    : domain_(std::move(domain)), options_(std::move(options)) {
    outcome_.vm = domain_->name();
}

VmWriter::~VmWriter() {
    std::lock_guard lock(mu_);
    release_locked();
}

std::string VmWriter::id() const {
    return std::string(kVmWriterId) + ":" + domain_->name();
}

std::string VmWriter::name() const {
    return "libvirt VM writer (" + domain_->name() + ")";
}

vss::ComponentKey VmWriter::component_key() const {
    return {id(), kVmLogicalPath, domain_->name()};
}

std::optional<VmBackupPlan> VmWriter::plan() const {
    std::lock_guard lock(mu_);
    return plan_;
}

VmWriterOutcome VmWriter::outcome() const {
    std::lock_guard lock(mu_);
    return outcome_;
}

std::expected<vss::WriterMetadata, vss::Veto> VmWriter::identify(vss::EventContext&) {
    auto desc = domain_->describe();
    if (!desc) return std::unexpected(vss::veto_from(desc.error()));
    vss::Component c;
    c.logical_path = kVmLogicalPath;
    c.name = domain_->name();
    c.type = vss::ComponentType::file_group;
    c.caption = "VM " + domain_->name();
    c.files.push_back({vss::FileKind::config, "libvirt:domain/" + domain_->name(), "", "", 0});
    for (const auto& d : desc->disks) {
        if (!virt::disk_is_backed_up(d)) continue;
        auto info = domain_->block_info(d.target);
        c.files.push_back(
            {vss::FileKind::disk, d.path, d.target, d.format, info ? info->capacity : 0});
    }
    if (!desc->boot.nvram.empty())
        c.files.push_back({vss::FileKind::nvram, desc->boot.nvram, "", "", 0});
    for (const auto* f : {&desc->boot.kernel, &desc->boot.initrd, &desc->boot.dtb})
        if (!f->empty()) c.files.push_back({vss::FileKind::file, *f, "", "", 0});
    vss::WriterMetadata m;
    m.writer_id = id();
    m.writer_name = name();
    m.restore_method = vss::RestoreMethod::stop_restore_start;
    m.components.push_back(std::move(c));
    return m;
}

vss::WriterResult VmWriter::prepare_backup(vss::EventContext& context) {
    std::lock_guard lock(mu_);
    const std::string label = domain_->label();
    vss::ComponentEntry* entry = nullptr;
    for (auto& e : context.components)
        if (e.key == component_key()) entry = &e;
    if (!entry) return std::unexpected(vss::veto_nonretryable(label + ": component not selected"));

    FactOptions fo;
    fo.scratch_dir = options_.scratch_dir;
    fo.agent_timeout = options_.agent_timeout;
    auto facts = gather_facts(*domain_, fo);
    if (!facts) return std::unexpected(vss::veto_from(facts.error()));
    MethodChoice choice = options_.method ? check_requested_method(*facts, *options_.method)
                                          : choose_method(*facts, options_.policy);
    if (choice.method == BackupMethod::none) {
        auto veto =
            vss::veto_nonretryable(label + " cannot be backed up: " + join(choice.reasons, "; "));
        veto.kind = choice.kind;
        return std::unexpected(std::move(veto));
    }
    outcome_ = {};
    outcome_.vm = domain_->name();
    outcome_.method = choice.method;
    outcome_.consistency = consistency_of(choice.method);
    outcome_.reasons = choice.reasons;
    if (facts->agent.filesystems)
        outcome_.filesystems_listed = static_cast<int>(facts->agent.filesystems->size());

    if (choice.method != BackupMethod::offline) {
        // A backup job (or checkpoint, scratch file) a killed vmshadow left behind would make
        // libvirt refuse this backup: end it first. Other tools' jobs are never touched.
        auto leftover = virt::end_leftover_backup(
            *domain_, options_.scratch_dir,
            options_.runtime_dir.empty() ? std::filesystem::path(virt::kDefaultBackupRuntimeDir)
                                         : std::filesystem::path(options_.runtime_dir));
        if (!leftover) return std::unexpected(vss::veto_from(leftover.error()));
        if (leftover->job_ended)
            outcome_.notes.push_back("ended a backup job left by a killed vmshadow process");
        for (const auto& c : leftover->checkpoints_deleted)
            outcome_.notes.push_back("deleted checkpoint " + c +
                                     " of a backup that never finished");
        if (!leftover->shadow_id.empty()) {
            // A shadow copy lasts until it is deleted: retrying would not help.
            auto veto = vss::veto_nonretryable(
                label + ": shadow copy " + leftover->shadow_id +
                " holds this VM's backup job (libvirt allows one per VM): delete it with "
                "`vmshadow shadow delete " +
                leftover->shadow_id + "` and retry");
            veto.kind = ErrorKind::conflict;
            return std::unexpected(std::move(veto));
        }
        if (!leftover->foreign_job.empty()) {
            return std::unexpected(vss::veto_retryable(
                label + ": another tool's backup job is running (" + leftover->foreign_job +
                "); libvirt allows one per VM: retry when it has finished"));
        }
    }

    auto plan =
        make_plan(*facts, std::move(choice), entry->previous_backup_stamp, context.backup_id);
    if (!plan) return std::unexpected(vss::veto_from(plan.error()));
    entry->backup_stamp = plan->new_checkpoint.value_or("");
    entry->backup_metadata = plan_to_json(*plan).dump();
    for (const auto& n : plan->chain_notes) outcome_.notes.push_back(n);
    plan_ = std::move(*plan);
    return {};
}

Result<VmBackupPlan> VmWriter::make_plan(const VmFacts& facts, MethodChoice choice,
                                         const std::string& previous_stamp,
                                         const std::string& backup_id) {
    VmBackupPlan plan;
    plan.method = choice.method;
    plan.reasons = std::move(choice.reasons);
    if (auto st = select_disks(facts, options_, plan, domain_->label()); !st)
        return std::unexpected(st.error());
    for (auto& d : plan.disks) {
        if (d.format != "qcow2") {
            d.full_reason = d.format +
                            " image: no dirty bitmaps, so it is read in full every time "
                            "(unchanged chunks are deduplicated by hash)";
        }
    }
    if (plan.method == BackupMethod::image) {
        plan.memory_file = (std::filesystem::path(options_.scratch_dir) /
                            ("vmshadow-memory-" + domain_->uuid() + "." + backup_id + ".save"))
                               .string();
    }
    if (plan.live()) plan_chain(plan, previous_stamp);
    return plan;
}

void VmWriter::plan_chain(VmBackupPlan& plan, const std::string& previous) {
    const bool any_qcow2 = std::any_of(plan.disks.begin(), plan.disks.end(),
                                       [](const PlannedDisk& d) { return d.format == "qcow2"; });
    if (any_qcow2 && !options_.repo_id.empty()) {
        auto name = virt::make_checkpoint_name(options_.repo_id, std::chrono::system_clock::now());
        if (name) plan.new_checkpoint = *name;
    }
    if (previous.empty() || !any_qcow2) return;
    if (options_.force_full) {
        const std::string why = options_.full_reason.empty() ? "--full" : options_.full_reason;
        plan.chain_notes.push_back(why + ": every disk is read in full");
        for (auto& d : plan.disks)
            if (d.format == "qcow2" && !options_.full_reason.empty()) d.full_reason = why;
        return;
    }
    auto health = virt::check_checkpoint(*domain_, previous);
    if (health && health->state == virt::CheckpointState::missing &&
        !options_.previous_checkpoint_xml.empty()) {
        // libvirt lost the metadata (reinstalled, VM re-defined) but the bitmaps may still be
        // in the qcow2 files: the restore point kept the checkpoint's XML for this.
        auto redefined = virt::redefine_checkpoint(*domain_, options_.previous_checkpoint_xml);
        if (redefined) {
            plan.chain_notes.push_back("checkpoint " + previous +
                                       " was missing from libvirt: redefined from the XML the "
                                       "last restore point stored");
            health = virt::check_checkpoint(*domain_, previous);
        } else {
            plan.chain_notes.push_back("checkpoint " + previous +
                                       " was missing from libvirt and could not be redefined (" +
                                       redefined.error().message() + ")");
        }
    }
    if (!health || !health->usable()) {
        std::string why = health ? health->reason : health.error().message();
        plan.chain_notes.push_back("incremental chain broken (checkpoint " + previous + ": " + why +
                                   "): every disk is read in full this time, unchanged chunks "
                                   "deduplicated by hash; the chain restarts with this backup");
        return;
    }
    auto info = virt::find_checkpoint(*domain_, previous);
    if (!info || !*info) return;
    for (auto& d : plan.disks) {
        if (d.format != "qcow2") continue;
        auto in_checkpoint =
            std::find_if((*info)->disks.begin(), (*info)->disks.end(),
                         [&](const auto& c) { return c.target == d.target && !c.bitmap.empty(); });
        auto previous_path =
            std::find_if(options_.previous_disk_paths.begin(), options_.previous_disk_paths.end(),
                         [&](const auto& p) { return p.first == d.target; });
        if (in_checkpoint == (*info)->disks.end() ||
            previous_path == options_.previous_disk_paths.end()) {
            d.full_reason = "disk added since the last backup: read in full";
        } else if (previous_path->second != d.path) {
            d.full_reason = "disk replaced since the last backup (was " + previous_path->second +
                            "): read in full";
        } else {
            d.incremental = true;
        }
        if (!d.incremental) plan.chain_notes.push_back(d.target + ": " + d.full_reason);
    }
    if (std::any_of(plan.disks.begin(), plan.disks.end(),
                    [](const PlannedDisk& d) { return d.incremental; })) {
        plan.incremental_from = previous;
    }
}

vss::WriterResult VmWriter::prepare_snapshot(vss::EventContext&) {
    std::lock_guard lock(mu_);
    if (!plan_ || plan_->method != BackupMethod::image) return {};
    auto state = domain_->state();
    if (!state) return std::unexpected(vss::veto_from(state.error()));
    was_paused_ = *state == virt::DomainState::paused;
    if (!was_paused_) {
        auto guard = virt::PauseGuard::pause(*domain_, options_.freeze, options_.pause_deadline);
        if (!guard) return std::unexpected(vss::veto_from(guard.error()));
        pause_guard_.emplace(std::move(*guard));
    }
    auto started = std::chrono::steady_clock::now();
    if (auto st = virt::save_memory_image(*domain_, plan_->memory_file); !st) {
        release_locked();
        return std::unexpected(vss::veto_from(st.error()));
    }
    outcome_.notes.push_back(
        "memory image saved in " +
        std::to_string(
            duration_cast<milliseconds>(std::chrono::steady_clock::now() - started).count()) +
        " ms" + (was_paused_ ? " (the VM was already paused and stays so)" : ""));
    return {};
}

vss::WriterResult VmWriter::freeze(vss::EventContext&) {
    std::lock_guard lock(mu_);
    if (!plan_) return {};
    if (plan_->method == BackupMethod::application) {
        auto guard = virt::FreezeGuard::freeze(*domain_, options_.freeze);
        if (!guard) return std::unexpected(vss::veto_from(guard.error()));
        outcome_.quiesce = guard->freeze_call();
        outcome_.filesystems_frozen = guard->frozen_count();
        if (guard->frozen_count() < outcome_.filesystems_listed) {
            outcome_.consistency = "crash";
            outcome_.reasons.push_back(
                "the guest agent froze " + std::to_string(guard->frozen_count()) + " of the " +
                std::to_string(outcome_.filesystems_listed) +
                " mounted filesystems it listed: the restore point is only crash-consistent");
        }
        freeze_guard_.emplace(std::move(*guard));
    } else if (plan_->method == BackupMethod::crash && options_.group) {
        auto state = domain_->state();
        if (!state) return std::unexpected(vss::veto_from(state.error()));
        if (*state != virt::DomainState::paused) {
            auto guard =
                virt::PauseGuard::pause(*domain_, options_.freeze, options_.freeze.thaw_deadline);
            if (!guard) return std::unexpected(vss::veto_from(guard.error()));
            pause_guard_.emplace(std::move(*guard));
            outcome_.reasons.push_back(
                "no guest agent: vCPUs paused so the group is captured at one instant");
        }
    }
    return {};
}

vss::WriterResult VmWriter::thaw(vss::EventContext&) {
    std::lock_guard lock(mu_);
    if (freeze_guard_) {
        auto report = freeze_guard_->thaw();
        freeze_guard_.reset();
        if (!report) return std::unexpected(vss::veto_retryable(report.error().message()));
        outcome_.freeze_window = report->window;
        if (report->window_broken()) {
            return std::unexpected(vss::veto_retryable(
                domain_->label() +
                ": the thaw guardian thawed the guest before vmshadow did (freeze window " +
                std::to_string(report->window.count()) +
                " ms): the snapshot may not be consistent; retry"));
        }
    }
    if (pause_guard_ && plan_ && plan_->method == BackupMethod::crash) {
        auto paused = pause_guard_->resume();
        pause_guard_.reset();
        if (!paused) return std::unexpected(vss::veto_from(paused.error()));
        outcome_.paused = *paused;
    }
    return {};
}

vss::WriterResult VmWriter::post_snapshot(vss::EventContext&) {
    std::lock_guard lock(mu_);
    if (pause_guard_) {
        auto paused = pause_guard_->resume();
        pause_guard_.reset();
        if (!paused) return std::unexpected(vss::veto_from(paused.error()));
        outcome_.paused = *paused;
    }
    return {};
}

vss::WriterResult VmWriter::abort(vss::EventContext&) {
    std::lock_guard lock(mu_);
    release_locked();
    if (plan_ && !plan_->memory_file.empty()) {
        std::error_code ec;
        std::filesystem::remove(plan_->memory_file, ec);
    }
    return {};
}

void VmWriter::release_locked() {
    if (freeze_guard_) {
        (void)freeze_guard_->thaw();
        freeze_guard_.reset();
    }
    if (pause_guard_) {
        (void)pause_guard_->resume();
        pause_guard_.reset();
    }
}

Result<std::vector<std::string>> retire_superseded_checkpoints(const virt::Domain& domain,
                                                               const std::string& repo_id,
                                                               const std::string& keep) {
    auto all = virt::list_checkpoints(domain);
    if (!all) return std::unexpected(all.error());
    std::vector<std::string> deleted;
    for (const auto& c : *all) {
        // Names carry their creation time, so within one repository they sort by age.
        if (!virt::checkpoint_belongs_to(c.name, repo_id) || c.name >= keep) continue;
        if (auto st = virt::delete_checkpoint(domain, c.name, repo_id); !st)
            return std::unexpected(st.error());
        deleted.push_back(c.name);
    }
    return deleted;
}

}  // namespace vmshadow::vmwriter
