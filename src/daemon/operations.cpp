// SPDX-License-Identifier: MIT
#include "daemon/operations.h"

#include <fnmatch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "common/byte_size.h"
#include "common/time_format.h"
#include "engine/boot_verify.h"
#include "engine/inventory.h"
#include "engine/vm_backup.h"
#include "engine/vm_backup_json.h"
#include "engine/vm_restore.h"
#include "repo/check.h"
#include "repo/gc.h"
#include "repo/repository.h"
#include "virt/connection.h"

namespace vmshadow::daemon {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Result<std::string> read_password(const RepositorySpec& spec) {
    if (spec.password_file.empty()) {
        return fail(ErrorKind::permission, "repository '" + spec.name +
                                               "' is encrypted: set password-file in its "
                                               "[repository." +
                                               spec.name + "] section");
    }
    std::ifstream in(spec.password_file);
    if (!in) {
        return fail(ErrorKind::permission, "repository '" + spec.name +
                                               "': cannot read password-file " +
                                               spec.password_file.string());
    }
    std::string password;
    std::getline(in, password);
    return password;
}

Result<std::unique_ptr<repo::Repository>> open_repo(const RepositorySpec& spec) {
    repo::OpenOptions options;
    options.password = [&spec] { return read_password(spec); };
    options.storage.credentials_file = spec.s3_credentials.string();
    options.storage.ca_file = spec.cacert.string();
    options.storage.virtual_hosted = spec.s3_virtual_hosted;
    options.storage.max_requests_per_second = spec.s3_max_rps;
    options.storage.max_bytes_per_second = std::uint64_t{spec.s3_max_bandwidth_mib} << 20;
    options.storage.log = [name = spec.name](const std::string& line) {
        std::cerr << "repository '" << name << "': " << line << std::endl;
    };
    options.lock_wait = std::chrono::seconds(spec.retry_lock_seconds);
    return with_context(repo::Repository::open(spec.path.string(), options),
                        "repository '" + spec.name + "'");
}

Result<const RepositorySpec*> find_repository(const DaemonConfig& config, const std::string& name) {
    auto it = config.repositories.find(name);
    if (it == config.repositories.end()) {
        return fail(ErrorKind::not_found, "repository '" + name + "' is not in the config");
    }
    return &it->second;
}

// The CLI binary the thaw guardian runs as (`vmshadow __thaw-guardian`): beside vmshadowd,
// or in the build tree's cli folder, or $VMSHADOW_CLI.
std::string cli_binary() {
    if (const char* env = std::getenv("VMSHADOW_CLI"); env && *env) return env;
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        for (auto candidate :
             {exe.parent_path() / "vmshadow", exe.parent_path() / ".." / "cli" / "vmshadow"}) {
            if (fs::exists(candidate, ec)) return fs::weakly_canonical(candidate, ec).string();
        }
    }
    return "/usr/local/bin/vmshadow";
}

std::optional<vmwriter::BackupMethod> method_of(const std::string& name) {
    if (name == "auto") return std::nullopt;
    return vmwriter::parse_method(name);
}

repo::KeepPolicy keep_policy(const Retention& r) {
    repo::KeepPolicy keep;
    keep.last = static_cast<int>(r.keep_last.value_or(0));
    keep.hourly = static_cast<int>(r.keep_hourly.value_or(0));
    keep.daily = static_cast<int>(r.keep_daily.value_or(0));
    keep.weekly = static_cast<int>(r.keep_weekly.value_or(0));
    keep.monthly = static_cast<int>(r.keep_monthly.value_or(0));
    keep.yearly = static_cast<int>(r.keep_yearly.value_or(0));
    return keep;
}

// The point's freeze window and duration (its manifest's timings) and its last boot
// verification, for the dashboard's VM page.
void add_dashboard_fields(const repo::RestorePoint& point, json& out) {
    auto number = [&](const char* key) -> json {
        auto it = point.timings.find(key);
        return it != point.timings.end() && it->is_number() ? *it : json();
    };
    out["freeze_ms"] = number("freeze_window_ms");
    out["duration_s"] = number("total_s");
    json verified = nullptr;
    std::string latest;  // ISO 8601 UTC: text order is time order; the newest one counts
    for (const auto& a : point.annotations) {
        if (a.kind != "boot_verification" || !a.data.is_object() || a.time < latest) continue;
        auto ok = a.data.find("ok");
        if (ok == a.data.end() || !ok->is_boolean()) continue;
        verified = ok->get<bool>() ? "ok" : "failed";
        latest = a.time;
    }
    out["verified"] = verified;
}

json prune_json(const repo::PruneResult& result) {
    std::size_t forgotten = 0;
    for (const auto& d : result.plan) forgotten += d.keep ? 0 : 1;
    json out{{"points_kept", result.plan.size() - forgotten}, {"points_forgotten", forgotten}};
    if (result.gc) {
        out["gc"] = {{"packs_removed", result.gc->packs_removed},
                     {"packs_rewritten", result.gc->packs_rewritten},
                     {"bytes_before", result.gc->bytes_before},
                     {"bytes_after", result.gc->bytes_after}};
    }
    return out;
}

void run_backup(const JobSpec& job, const std::vector<std::string>& vms, const DaemonConfig& config,
                const RepositorySpec& spec, TaskContext& task, OperationOutcome& out) {
    auto connection = virt::Connection::open(config.daemon.connect_uri);
    if (!connection) {
        out.error = connection.error();
        return;
    }
    auto repo = open_repo(spec);
    if (!repo) {
        out.error = repo.error();
        return;
    }
    engine::VmBackupOptions options;
    options.vms = vms;
    options.method = method_of(job.method);
    options.group = job.group;
    options.scratch_dir = config.daemon.scratch_dir;
    options.freeze.guardian_executable = cli_binary();
    options.freeze.connect_uri = connection->uri();
    options.task = &task;
    auto report = engine::backup_vms(**repo, *connection, options);

    json list = json::array();
    for (const auto& o : report.vms) {
        list.push_back(engine::vm_backup_outcome_json(o));
        if (o.error || !o.point) {
            out.vm_failures.push_back(o.vm);
            continue;
        }
        VmBackupState state;
        state.vm = o.vm;
        state.last_success = unix_seconds(task.clock().now());
        state.last_duration_s = o.seconds;
        state.last_bytes_added = o.bytes_added;
        state.last_freeze_ms = o.freeze_ms.value_or(-1);
        state.last_point = *o.point;
        state.last_consistency = o.consistency;
        out.vm_successes.push_back(state);
    }
    out.result["vms"] = list;
    if (report.error) {
        out.error = *report.error;
        return;
    }
    if (job.retention.empty()) return;
    // Retention after a successful run only, VM by VM (a VM's points never decide another's).
    task.phase("retention", 0, vms.size());
    json pruned = json::object();
    for (const auto& vm : vms) {
        repo::GcOptions gc;
        gc.task = &task;
        auto result = repo::prune(**repo, keep_policy(job.retention), vm, false, gc);
        if (!result) {
            // The backup stands; the next run prunes again.
            task.warn("retention of " + vm + " failed: " + result.error().message());
            pruned[vm] = {{"error", result.error().message()}};
            continue;
        }
        pruned[vm] = prune_json(*result);
    }
    out.result["retention"] = pruned;
}

void run_verify_job(const std::vector<std::string>& vms, const DaemonConfig& config,
                    const RepositorySpec& spec, TaskContext& task, OperationOutcome& out) {
    json list = json::array();
    for (const auto& vm : vms) {
        if (auto st = task.check_cancel("verify"); !st) {
            out.error = st.error();
            break;
        }
        OperationOutcome one = run_verify(
            VerifyRequest{.repository = spec.name, .point = vm + "@latest"}, config, task);
        list.push_back(one.result);
        if (one.error && !out.error) out.error = one.error->with_context("vm '" + vm + "'");
    }
    out.result["vms"] = list;
}

}  // namespace

Result<std::vector<std::string>> resolve_vms(const std::vector<std::string>& patterns,
                                             const std::string& connect_uri) {
    auto connection = virt::Connection::open(connect_uri);
    if (!connection) return std::unexpected(connection.error());
    auto domains = connection->list_domains();
    if (!domains) return std::unexpected(domains.error());
    std::set<std::string> matched;
    for (const auto& pattern : patterns) {
        bool glob = pattern.find_first_of("*?[") != std::string::npos;
        bool any = false;
        for (const auto& d : *domains) {
            if (::fnmatch(pattern.c_str(), d.name().c_str(), 0) == 0) {
                matched.insert(d.name());
                any = true;
            }
        }
        if (!glob && !any) {
            return fail(ErrorKind::not_found,
                        "vm '" + pattern + "' does not exist on this host (virsh list --all)");
        }
    }
    if (matched.empty()) {
        return fail(ErrorKind::not_found, "no VM of this host matches the job's vms");
    }
    return std::vector<std::string>(matched.begin(), matched.end());
}

OperationOutcome run_job(const JobSpec& job, const std::vector<std::string>& vms,
                         const DaemonConfig& config, TaskContext& task) {
    OperationOutcome out;
    auto spec = find_repository(config, job.repository);
    if (!spec) {
        out.error = spec.error();
        return out;
    }
    switch (job.kind) {
        case JobKind::backup:
            run_backup(job, vms, config, **spec, task, out);
            break;
        case JobKind::verify:
            run_verify_job(vms, config, **spec, task, out);
            break;
        case JobKind::prune: {
            auto repo = open_repo(**spec);
            if (!repo) {
                out.error = repo.error();
                break;
            }
            repo::GcOptions gc;
            gc.task = &task;
            auto result = repo::prune(**repo, keep_policy(job.retention), "", false, gc);
            if (!result) {
                out.error = result.error();
                break;
            }
            out.result = prune_json(*result);
            break;
        }
        case JobKind::check: {
            auto repo = open_repo(**spec);
            if (!repo) {
                out.error = repo.error();
                break;
            }
            auto lock = (*repo)->lock(repo::LockMode::shared, "check (vmshadowd)");
            if (!lock) {
                out.error = lock.error();
                break;
            }
            repo::CheckOptions options;
            options.read_data = job.read_data_percent > 0;
            if (options.read_data) options.read_data_percent = job.read_data_percent;
            options.task = &task;
            auto report = repo::check_repository(**repo, options);
            if (!report) {
                out.error = report.error();
                break;
            }
            out.result = {{"packs", report->packs},
                          {"packs_read", report->packs_read},
                          {"read_data_percent", job.read_data_percent},
                          {"blobs", report->blobs},
                          {"points", report->points},
                          {"bytes_read", report->bytes_read},
                          {"problems", report->problems},
                          {"warnings", report->warnings},
                          {"damaged_points", report->damaged_points}};
            if (!report->ok()) {
                out.error = Error(ErrorKind::corruption,
                                  "repository '" + job.repository +
                                      "': " + std::to_string(report->problems.size()) +
                                      " problem(s), first: " + report->problems.front());
            }
            break;
        }
    }
    return out;
}

// What a restore or a verify works with: the repository's settings, a libvirt connection
// and the open repository.
struct Opened {
    const RepositorySpec* spec;
    virt::Connection connection;
    std::unique_ptr<repo::Repository> repo;
};

Result<Opened> open_for_request(const DaemonConfig& config, const std::string& repository) {
    auto spec = find_repository(config, repository);
    if (!spec) return std::unexpected(spec.error());
    auto connection = virt::Connection::open(config.daemon.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    auto repo = open_repo(**spec);
    if (!repo) return std::unexpected(repo.error());
    return Opened{*spec, std::move(*connection), std::move(*repo)};
}

OperationOutcome run_restore(const RestoreRequest& request, const DaemonConfig& config,
                             TaskContext& task) {
    OperationOutcome out;
    auto opened = open_for_request(config, request.repository);
    if (!opened) {
        out.error = opened.error();
        return out;
    }
    auto& [spec, connection, repo] = *opened;
    engine::VmRestoreOptions options;
    options.point = request.point;
    options.as_name = request.as_name;
    options.replace = request.replace;
    options.start = request.start;
    options.task = &task;
    auto result = engine::restore_vm(*repo, connection, options);
    if (!result) {
        out.error = result.error();
        return out;
    }
    json disks = json::array();
    for (const auto& d : result->disks) {
        disks.push_back({{"disk", d.name}, {"path", d.path}, {"size", d.size}});
    }
    out.result = {{"point", result->point},
                  {"source_vm", result->source_vm},
                  {"vm", result->vm},
                  {"consistency", result->consistency},
                  {"disks", disks},
                  {"replaced", result->replaced},
                  {"started", result->started},
                  {"notes", result->notes},
                  {"seconds", result->seconds}};
    return out;
}

OperationOutcome run_verify(const VerifyRequest& request, const DaemonConfig& config,
                            TaskContext& task) {
    OperationOutcome out;
    auto opened = open_for_request(config, request.repository);
    if (!opened) {
        out.error = opened.error();
        return out;
    }
    auto& [spec, connection, repo] = *opened;
    engine::BootVerifyOptions options;
    options.point = request.point;
    options.work_dir = config.daemon.scratch_dir;
    options.task = &task;
    if (repo->config().encrypted) {
        auto password = read_password(*spec);
        if (!password) {
            out.error = password.error();
            return out;
        }
        options.password = *password;
    }
    auto result = engine::verify_boot(*repo, connection, options);
    if (!result) {
        out.error = result.error();
        return out;
    }
    out.result = {{"point", result->point},
                  {"vm", result->vm},
                  {"ok", result->ok},
                  {"detail", result->detail},
                  {"seconds", result->seconds}};
    if (!result->ok) {
        out.error =
            Error(ErrorKind::corruption, "point " + result->point.substr(0, 12) + " of " +
                                             result->vm + " did not boot: " + result->detail);
    }
    return out;
}

Result<nlohmann::json> prune_preview(const RepositorySpec& spec, const std::string& vm,
                                     const Retention& keep) {
    auto repo = open_repo(spec);
    if (!repo) return std::unexpected(repo.error());
    auto result = repo::prune(**repo, keep_policy(keep), vm, true);
    if (!result) return std::unexpected(result.error());
    json points = json::array();
    for (const auto& d : result->plan)
        points.push_back({{"id", d.id.hex()},
                          {"vm", d.vm},
                          {"time", iso8601_utc(d.time)},
                          {"keep", d.keep},
                          {"reasons", d.reasons}});
    return points;
}

Result<std::string> forget_point(const RepositorySpec& spec, const std::string& point) {
    auto repo = open_repo(spec);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::exclusive, "forget (vmshadowd)");
    if (!lock) return std::unexpected(lock.error());
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    auto p = repo::Repository::resolve(*listing, point);
    if (!p) return std::unexpected(p.error());
    if (auto st = (*repo)->forget({p->id}); !st) return std::unexpected(st.error());
    return p->id.hex();
}

Result<std::vector<VmSummary>> host_inventory(const DaemonConfig& config) {
    engine::InventoryRequest request;
    request.connect_uri = config.daemon.connect_uri;
    request.scratch_dir = config.daemon.scratch_dir;
    auto reports = engine::take_inventory(request);
    if (!reports) return std::unexpected(reports.error());
    std::vector<VmSummary> out;
    for (const auto& r : *reports) {
        out.push_back({r.facts.name, std::string(virt::state_name(r.facts.state)),
                       std::string(vmwriter::method_name(r.choice.method)), r.choice.reasons});
    }
    return out;
}

Result<RepositoryFacts> repository_facts(const RepositorySpec& spec) {
    auto repo = open_repo(spec);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::shared, "status (vmshadowd)");
    if (!lock) return std::unexpected(lock.error());
    if (auto st = (*repo)->load_index(); !st) return std::unexpected(st.error());
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    RepositoryFacts facts;
    const repo::Index& index = (*repo)->index();
    for (std::size_t i = 0; i < index.packs().size(); ++i) facts.stored_bytes += index.pack_size(i);
    for (const auto& p : listing->points) {
        for (const auto& d : p.disks) facts.logical_bytes += d.size;
        auto& latest = facts.latest[p.vm];
        if (p.time >= latest.time) latest = {p.id.hex(), p.time, p.consistency};
    }
    facts.packs = index.packs().size();
    facts.blobs = index.blob_count();
    facts.points = listing->points.size();
    facts.encrypted = (*repo)->config().encrypted;
    return facts;
}

Result<nlohmann::json> repository_points(const RepositorySpec& spec, const std::string& vm) {
    auto repo = open_repo(spec);
    if (!repo) return std::unexpected(repo.error());
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    json points = json::array();
    for (auto it = listing->points.rbegin(); it != listing->points.rend(); ++it) {
        if (!vm.empty() && it->vm != vm) continue;
        json p = repo::point_summary_json(*it);
        p["repository"] = spec.name;
        add_dashboard_fields(*it, p);
        points.push_back(std::move(p));
    }
    return points;
}

}  // namespace vmshadow::daemon
