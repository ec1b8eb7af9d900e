// SPDX-License-Identifier: MIT
#include "vmwriter/pull_backup_provider.h"

#include "vmwriter/backup_plan.h"
#include "vmwriter/vm_writer.h"

namespace vmshadow::vmwriter {
namespace {

bool is_vm_component(const vss::ComponentEntry& e) {
    return e.key.writer_id.rfind(kVmWriterId, 0) == 0 && e.key.logical_path == kVmLogicalPath;
}

}  // namespace

PullBackupProvider::PullBackupProvider(std::map<std::string, std::shared_ptr<virt::Domain>> domains,
                                       PullProviderOptions options)
    : domains_(std::move(domains)), options_(std::move(options)) {}

PullBackupProvider::~PullBackupProvider() {
    (void)abort_snapshot_set("");
}

Status PullBackupProvider::prepare_snapshot_set(const vss::SnapshotRequest& request) {
    std::lock_guard lock(mu_);
    for (const auto& entry : request.components) {
        if (!is_vm_component(entry)) continue;
        auto domain = domains_.find(entry.key.name);
        if (domain == domains_.end())
            return fail(ErrorKind::internal, "provider: no domain for " + entry.key.display());
        auto plan = parse_plan(entry.backup_metadata);
        if (!plan) return std::unexpected(plan.error().with_context(entry.key.display()));
        if (!plan->live()) continue;
        virt::BackupSpec spec;
        for (const auto& d : plan->disks) {
            spec.disks.push_back(d.target);
            if (plan->incremental_from && !d.incremental) spec.full_disks.push_back(d.target);
        }
        spec.scratch_dir = options_.scratch_dir;
        spec.incremental_from = plan->incremental_from;
        spec.new_checkpoint = plan->new_checkpoint;
        if (!options_.runtime_dir.empty()) spec.runtime_dir = options_.runtime_dir;
        auto job = virt::BackupJob::prepare(*domain->second, spec);
        if (!job) return std::unexpected(job.error());
        job->set_scratch_limit(scratch_limit_);
        jobs_[entry.key.name] = std::make_unique<virt::BackupJob>(std::move(*job));
    }
    return {};
}

Result<vss::SnapshotSet> PullBackupProvider::create_snapshot_set(
    const vss::SnapshotRequest& request) {
    std::lock_guard lock(mu_);
    vss::SnapshotSet set;
    set.id = request.backup_id;
    for (const auto& entry : request.components) {
        if (!is_vm_component(entry)) continue;
        vss::ComponentSnapshot snapshot;
        snapshot.component = entry.key;
        auto job = jobs_.find(entry.key.name);
        if (job == jobs_.end()) {
            // Offline: the images themselves are the point-in-time copy.
            auto plan = parse_plan(entry.backup_metadata);
            if (!plan) return std::unexpected(plan.error());
            for (const auto& d : plan->disks)
                snapshot.devices.push_back({d.target, d.path, "file:" + d.path});
        } else {
            // Only the begin call: the job's XML is read after the thaw (describe_jobs).
            if (auto st = job->second->start(); !st) return std::unexpected(st.error());
            for (const auto& e : job->second->exports()) {
                snapshot.devices.push_back(
                    {e.target, "",
                     "nbd+unix:///" + e.export_name + "?socket=" + job->second->socket().string()});
            }
        }
        set.snapshots.push_back(std::move(snapshot));
    }
    set.created = std::chrono::system_clock::now();
    return set;
}

Status PullBackupProvider::describe_jobs() {
    std::lock_guard lock(mu_);
    for (auto& [vm, job] : jobs_) {
        if (!job->running()) continue;
        if (auto st = job->describe(); !st) return st;
    }
    return {};
}

Status PullBackupProvider::finish_snapshot_set(const vss::SnapshotSet&) {
    std::lock_guard lock(mu_);
    std::optional<Error> first;
    for (auto& [vm, job] : jobs_) {
        if (!job->running()) continue;
        if (auto st = job->finish(); !st && !first) first = st.error();
    }
    if (first) return std::unexpected(*first);
    return {};
}

Status PullBackupProvider::abort_snapshot_set(const std::string&) {
    std::lock_guard lock(mu_);
    std::optional<Error> first;
    for (auto& [vm, job] : jobs_) {
        // A finished job keeps its checkpoint: the restore point may already reference it;
        // the engine deletes it if the restore point is not committed.
        if (auto st = job->abort(); !st && !first) first = st.error();
    }
    jobs_.clear();
    if (first) return std::unexpected(*first);
    return {};
}

virt::BackupJob* PullBackupProvider::job(const std::string& vm) {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(vm);
    return it == jobs_.end() ? nullptr : it->second.get();
}

void PullBackupProvider::set_scratch_limit(std::uint64_t bytes) {
    std::lock_guard lock(mu_);
    scratch_limit_ = bytes;
    for (auto& [vm, job] : jobs_) job->set_scratch_limit(bytes);
}

}  // namespace vmshadow::vmwriter
