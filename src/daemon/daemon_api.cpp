// SPDX-License-Identifier: MIT
// Daemon's answers to the REST API (ApiBackend): views of VMs, points, jobs, tasks and
// repositories; job edits guarded by the config's digest; runs, restores and verifies queued
// as tasks; metrics.
#include <fnmatch.h>

#include <fstream>

#include "common/atomic_file.h"
#include "common/time_format.h"
#include "daemon/calendar.h"
#include "daemon/daemon_state.h"
#include "daemon/metrics.h"

namespace vmshadow::daemon {
namespace {

using nlohmann::json;

constexpr auto kInventoryMaxAge = std::chrono::seconds(60);

// The list leaves each task's result out (GET /tasks/{id} has it): parsing fifty reports per
// request is what a dashboard polling the list every two seconds would pay for nothing.
json task_json(const TaskRecord& t, bool with_result = true) {
    json j{{"id", t.id},
           {"kind", t.kind},
           {"job", t.job},
           {"target", t.target},
           {"trigger", t.trigger},
           {"state", task_state_name(t.state)},
           {"queued_at", t.queued_at},
           {"started_at", t.started_at ? json(t.started_at) : json()},
           {"ended_at", t.ended_at ? json(t.ended_at) : json()},
           {"log_lines", t.log_lines},
           {"progress",
            {{"phase", t.progress.phase},
             {"item", t.progress.item},
             {"bytes_done", t.progress.bytes_done},
             {"bytes_total", t.progress.bytes_total},
             {"items_done", t.progress.items_done},
             {"items_total", t.progress.items_total}}}};
    if (!t.error.empty()) {
        j["error"] = t.error;
        j["error_kind"] = t.error_kind;
    }
    if (with_result && !t.result.empty()) {
        j["result"] = json::parse(t.result, nullptr, false);
        if (j["result"].is_discarded()) j["result"] = nullptr;
    }
    return j;
}

bool covers(const JobSpec& job, const std::string& vm) {
    for (const auto& p : job.vms) {
        if (::fnmatch(p.c_str(), vm.c_str(), 0) == 0) return true;
    }
    return false;
}

Status check_digest(const LoadedConfig& current, const std::string& digest) {
    if (digest != current.digest) {
        return fail(ErrorKind::conflict, "the config changed since it was read (digest " +
                                             digest.substr(0, 12) + " is not the current " +
                                             current.digest.substr(0, 12) +
                                             "): read the jobs again and retry");
    }
    return {};
}

}  // namespace

// Replaces the config file (rendered: comments are not kept) and the config in memory, when
// the digest the client read is still the file's. Called with the state's mutex held.
static Result<json> commit_config(Daemon::State& s, DaemonConfig next, const std::string& digest) {
    // The file may have been edited by hand since it was loaded: its digest is what counts.
    auto on_disk = load_config(s.options.config_file);
    if (!on_disk) return std::unexpected(on_disk.error());
    if (auto st = check_digest(*on_disk, digest); !st) return std::unexpected(st.error());
    if (auto st = validate_config(next); !st) return std::unexpected(st.error());
    std::string text = render_config(next);
    std::error_code ec;
    std::filesystem::create_directories(s.options.config_file.parent_path(), ec);
    if (auto st = write_file_atomically(s.options.config_file, text); !st) {
        return std::unexpected(st.error());
    }
    s.config.config = std::move(next);
    s.config.digest = config_digest(text);
    s.wake.notify_all();
    return json{{"digest", s.config.digest}};
}

Result<json> Daemon::vms() {
    State& s = *state_;
    bool stale = false;
    std::vector<VmSummary> inventory;
    {
        std::lock_guard lock(s.inventory_mutex);
        inventory = s.inventory;
        stale = std::chrono::steady_clock::now() - s.inventory_time > kInventoryMaxAge;
    }
    if (inventory.empty() || stale) {
        // The agent probes take seconds: one refresh at a time; the first caller waits for it,
        // later ones get the last answer while it runs.
        bool expected = false;
        if (s.inventory_refreshing.compare_exchange_strong(expected, true)) {
            DaemonConfig config;
            {
                std::lock_guard lock(s.mutex);
                config = s.config.config;
            }
            auto fresh = host_inventory(config);
            s.inventory_refreshing = false;
            if (!fresh && inventory.empty()) return std::unexpected(fresh.error());
            if (fresh) {
                std::lock_guard lock(s.inventory_mutex);
                s.inventory = *fresh;
                s.inventory_time = std::chrono::steady_clock::now();
                inventory = *fresh;
            }
        }
    }
    auto states = s.store->vm_states();
    if (!states) return std::unexpected(states.error());
    std::map<std::string, VmBackupState> by_vm;
    for (auto& v : *states) by_vm[v.vm] = v;
    std::lock_guard lock(s.mutex);
    // A point the daemon did not make (`vmshadow backup` by hand) protects the VM as well:
    // the repositories' newest points (refreshed with their sizes) count too.
    for (const auto& [repository, facts] : s.repository_facts) {
        for (const auto& [vm, latest] : facts.latest) {
            auto& v = by_vm[vm];
            v.vm = vm;
            if (latest.time > v.last_success) {
                v.last_success = latest.time;
                v.last_point = latest.id;
                v.last_consistency = latest.consistency;
            }
        }
    }
    const auto now = s.clock->now();
    const std::int64_t now_s = unix_seconds(now);
    json out = json::array();
    for (const auto& vm : inventory) {
        json jobs = json::array();
        std::optional<Clock::time_point> next;
        unsigned alert_hours = 0;
        for (const auto& job : s.config.config.jobs) {
            if (job.kind != JobKind::backup || !covers(job, vm.name)) continue;
            jobs.push_back(job.id);
            auto n = next_run(job, now);
            if (n && (!next || *n < *next)) next = n;
            if (job.alert_after_hours) alert_hours = job.alert_after_hours;
        }
        json j{{"name", vm.name},
               {"state", vm.state},
               {"method", vm.method},
               {"jobs", jobs},
               {"next_run", next ? json(iso8601_utc(unix_seconds(*next))) : json()}};
        auto st = by_vm.find(vm.name);
        std::string protection = jobs.empty() ? "unprotected" : "pending";
        if (st != by_vm.end() && st->second.last_success > 0) {
            const auto& v = st->second;
            j["last_point"] = v.last_point;
            j["last_backup"] = iso8601_utc(v.last_success);
            j["age_s"] = now_s - v.last_success;
            j["consistency"] = v.last_consistency;
            protection = jobs.empty() ? "unprotected" : "protected";
            if (alert_hours &&
                now_s - v.last_success > static_cast<std::int64_t>(alert_hours) * 3600)
                protection = "stale";
        }
        if (st != by_vm.end() && st->second.last_failure > st->second.last_success) {
            protection = "failing";
        }
        j["protection"] = protection;
        out.push_back(std::move(j));
    }
    return out;
}

Result<json> Daemon::points(const std::string& vm) {
    DaemonConfig config;
    {
        std::lock_guard lock(state_->mutex);
        config = state_->config.config;
    }
    json all = json::array();
    for (const auto& [name, spec] : config.repositories) {
        auto points = repository_points(spec, vm);
        if (!points) return std::unexpected(points.error());
        for (auto& p : *points) all.push_back(std::move(p));
    }
    return json{{"vm", vm}, {"points", all}};
}

Result<json> Daemon::jobs() {
    State& s = *state_;
    std::lock_guard lock(s.mutex);
    json list = json::array();
    const auto now = s.clock->now();
    for (const auto& job : s.config.config.jobs) {
        json j = job_to_json(job);
        auto next = next_run(job, now);
        j["next_run"] = next ? json(iso8601_utc(unix_seconds(*next))) : json();
        auto st = s.store->job_state(job.id);
        if (st) {
            j["last_task"] = st->last_task ? json(*st->last_task) : json();
            j["last_success"] = st->last_success ? json(iso8601_utc(*st->last_success)) : json();
        }
        list.push_back(std::move(j));
    }
    return json{{"digest", s.config.digest}, {"jobs", list}};
}

Result<json> Daemon::add_job(const json& body, const std::string& digest) {
    auto job = job_from_json(body);
    if (!job) return std::unexpected(job.error());
    std::lock_guard lock(state_->mutex);
    DaemonConfig next = state_->config.config;
    if (next.job(job->id)) {
        return fail(ErrorKind::conflict, "job '" + job->id + "' exists: edit it with PUT");
    }
    next.jobs.push_back(*job);
    auto done = commit_config(*state_, std::move(next), digest);
    if (!done) return done;
    (*done)["job"] = job_to_json(*job);
    return done;
}

Result<json> Daemon::edit_job(const std::string& id, const json& body, const std::string& digest) {
    json with_id = body;
    if (!with_id.contains("id")) with_id["id"] = id;
    auto job = job_from_json(with_id);
    if (!job) return std::unexpected(job.error());
    if (job->id != id) {
        return fail(ErrorKind::invalid_argument, "job id '" + job->id + "' is not the path's '" +
                                                     id + "': a job cannot be renamed");
    }
    std::lock_guard lock(state_->mutex);
    DaemonConfig next = state_->config.config;
    auto it = std::find_if(next.jobs.begin(), next.jobs.end(), [&](auto& j) { return j.id == id; });
    if (it == next.jobs.end()) return fail(ErrorKind::not_found, "job '" + id + "' does not exist");
    *it = *job;
    auto done = commit_config(*state_, std::move(next), digest);
    if (!done) return done;
    (*done)["job"] = job_to_json(*job);
    return done;
}

Result<json> Daemon::remove_job(const std::string& id, const std::string& digest) {
    std::lock_guard lock(state_->mutex);
    DaemonConfig next = state_->config.config;
    auto removed = std::erase_if(next.jobs, [&](const auto& j) { return j.id == id; });
    if (!removed) return fail(ErrorKind::not_found, "job '" + id + "' does not exist");
    for (const auto& j : next.jobs) {
        if (j.after && *j.after == id) {
            return fail(ErrorKind::conflict,
                        "job '" + j.id + "' runs after '" + id + "': change it first");
        }
    }
    return commit_config(*state_, std::move(next), digest);
}

Result<json> Daemon::run_job(const std::string& id) {
    JobSpec job;
    std::string uri;
    {
        std::lock_guard lock(state_->mutex);
        const JobSpec* found = state_->config.config.job(id);
        if (!found) return fail(ErrorKind::not_found, "job '" + id + "' does not exist");
        job = *found;
        uri = state_->config.config.daemon.connect_uri;
    }
    auto vms = State::lookup_vms(job, uri);  // libvirt, without the lock
    std::lock_guard lock(state_->mutex);
    if (state_->stopping) return fail(ErrorKind::unavailable, "the daemon is stopping");
    auto task = state_->queue_job(job, "api", vms);
    if (!task) return std::unexpected(task.error());
    state_->start_ready_tasks();
    return json{{"task", *task}};
}

Result<json> Daemon::tasks(const TaskFilter& filter) {
    auto list = state_->store->list(filter);
    if (!list) return std::unexpected(list.error());
    json out = json::array();
    for (const auto& t : *list) out.push_back(task_json(t, false));
    return json{{"tasks", out}};
}

Result<json> Daemon::task(std::int64_t id) {
    auto t = state_->store->get(id);
    if (!t) return std::unexpected(t.error());
    if (!*t) return fail(ErrorKind::not_found, "task " + std::to_string(id) + " does not exist");
    return task_json(**t);
}

Result<json> Daemon::task_log(std::int64_t id, std::int64_t start, std::size_t limit) {
    auto t = state_->store->get(id);
    if (!t) return std::unexpected(t.error());
    if (!*t) return fail(ErrorKind::not_found, "task " + std::to_string(id) + " does not exist");
    auto lines = state_->store->log(id, start, limit);
    if (!lines) return std::unexpected(lines.error());
    json out = json::array();
    std::int64_t next = start;
    for (const auto& l : *lines) {
        out.push_back({{"n", l.number},
                       {"time", iso8601_utc(l.time)},
                       {"level", log_level_name(l.level)},
                       {"text", l.text}});
        next = l.number + 1;
    }
    return json{{"task", id},
                {"start", start},
                {"lines", out},
                {"next", next},
                {"done", task_state_final((*t)->state)}};
}

Result<json> Daemon::abort_task(std::int64_t id) {
    State& s = *state_;
    std::lock_guard lock(s.mutex);
    if (s.queue.remove_waiting(id)) {
        auto plan = s.waiting.find(id);
        Error error(ErrorKind::cancelled, "aborted before it started");
        (void)s.store->finish(id, TaskState::cancelled, "{}", error);
        if (plan != s.waiting.end()) {
            TaskPlan p = std::move(plan->second);
            s.waiting.erase(plan);
            s.task_ended(p, TaskState::cancelled, error);
        }
        return json{{"task", id}, {"state", "cancelled"}};
    }
    if (auto it = s.running.find(id); it != s.running.end() && !it->second->done) {
        (void)s.store->append_log(id, LogLevel::warning, "abort requested");
        it->second->cancel.request();
        return json{{"task", id}, {"state", "cancelling"}};
    }
    auto t = s.store->get(id);
    if (!t) return std::unexpected(t.error());
    if (!*t) return fail(ErrorKind::not_found, "task " + std::to_string(id) + " does not exist");
    return fail(ErrorKind::conflict, "task " + std::to_string(id) + " has already ended (" +
                                         std::string(task_state_name((*t)->state)) + ")");
}

Result<json> Daemon::repositories() {
    std::lock_guard lock(state_->mutex);
    json list = json::array();
    for (const auto& [name, spec] : state_->config.config.repositories) {
        list.push_back({{"name", name}, {"path", spec.path.string()}});
    }
    return json{{"repositories", list}};
}

Result<json> Daemon::repository_status(const std::string& name) {
    RepositorySpec spec;
    {
        std::lock_guard lock(state_->mutex);
        auto it = state_->config.config.repositories.find(name);
        if (it == state_->config.config.repositories.end()) {
            return fail(ErrorKind::not_found, "repository '" + name + "' is not in the config");
        }
        spec = it->second;
    }
    auto facts = repository_facts(spec);
    if (!facts) return std::unexpected(facts.error());
    auto last_of = [&](const std::string& kind) -> json {
        TaskFilter f;
        f.kind = kind;
        f.state = TaskState::ok;
        f.limit = 50;
        auto list = state_->store->list(f);
        if (!list) return nullptr;
        for (const auto& t : *list) {
            if (t.target == name) return iso8601_utc(t.ended_at);
        }
        return nullptr;
    };
    double ratio = facts->stored_bytes ? static_cast<double>(facts->logical_bytes) /
                                             static_cast<double>(facts->stored_bytes)
                                       : 0.0;
    return json{{"name", name},
                {"path", spec.path.string()},
                {"encrypted", facts->encrypted},
                {"size", facts->stored_bytes},
                {"stored_size", facts->stored_bytes},
                {"logical_size", facts->logical_bytes},
                {"dedup_ratio", ratio},
                {"packs", facts->packs},
                {"chunks", facts->blobs},
                {"points", facts->points},
                {"last_check", last_of("check")},
                {"last_gc", last_of("prune")}};
}

// The repository and point a restore or verify request names: "point" (an id, a prefix or
// "VM@latest"), else "vm" (its latest point); "repository", else the only one configured.
// Called with the state's mutex held.
static Result<std::pair<std::string, std::string>> point_of(const Daemon::State& s,
                                                            const json& request) {
    std::string point = request.value("point", "");
    if (point.empty()) point = request.value("vm", "") + "@latest";
    std::string repository = request.value("repository", "");
    const auto& repositories = s.config.config.repositories;
    if (repository.empty()) {
        if (repositories.size() != 1) {
            return fail(ErrorKind::invalid_argument, "say which repository: field 'repository' (" +
                                                         std::to_string(repositories.size()) +
                                                         " are configured)");
        }
        repository = repositories.begin()->first;
    }
    if (!repositories.count(repository)) {
        return fail(ErrorKind::not_found, "repository '" + repository + "' is not in the config");
    }
    return std::pair{repository, point};
}

Result<json> Daemon::restore(const json& request) {
    std::lock_guard lock(state_->mutex);
    if (state_->stopping) return fail(ErrorKind::unavailable, "the daemon is stopping");
    auto where = point_of(*state_, request);
    if (!where) return std::unexpected(where.error());
    RestoreRequest r;
    r.repository = where->first;
    r.point = where->second;
    if (request.contains("as") && request["as"].is_string())
        r.as_name = request["as"].get<std::string>();
    r.replace = request.value("replace", false);
    r.start = request.value("start", false);
    TaskPlan plan;
    plan.kind = "restore";
    // The VM it holds: the new name, or the point's VM ("web1@latest" → web1; for a bare id
    // the id itself, which holds nothing another task names).
    std::string vm = r.as_name.value_or(r.point.substr(0, r.point.find('@')));
    plan.vms = {vm};
    plan.restore = r;
    auto id = state_->queue_request(std::move(plan), vm);
    if (!id) return std::unexpected(id.error());
    state_->start_ready_tasks();
    return json{{"task", *id}};
}

Result<json> Daemon::verify(const json& request) {
    std::lock_guard lock(state_->mutex);
    if (state_->stopping) return fail(ErrorKind::unavailable, "the daemon is stopping");
    if (!request.value("boot", true)) {
        return fail(ErrorKind::unsupported,
                    "verify checks a point by booting it (boot: true); the data itself is read "
                    "back by a check job with read-data-percent");
    }
    auto where = point_of(*state_, request);
    if (!where) return std::unexpected(where.error());
    VerifyRequest r{where->first, where->second};
    TaskPlan plan;
    plan.kind = "verify";
    plan.verify = r;
    auto id = state_->queue_request(std::move(plan), r.point);
    if (!id) return std::unexpected(id.error());
    state_->start_ready_tasks();
    return json{{"task", *id}};
}

// The repository `name` names, or the only one configured when it is "". Called with the
// state's mutex held.
static Result<RepositorySpec> repository_named(const Daemon::State& s, const std::string& name) {
    const auto& repositories = s.config.config.repositories;
    if (name.empty()) {
        if (repositories.size() != 1)
            return fail(ErrorKind::invalid_argument, "say which repository: 'repository' (" +
                                                         std::to_string(repositories.size()) +
                                                         " are configured)");
        return repositories.begin()->second;
    }
    auto it = repositories.find(name);
    if (it == repositories.end())
        return fail(ErrorKind::not_found, "repository '" + name + "' is not in the config");
    return it->second;
}

Result<json> Daemon::backup(const json& request) {
    const std::string vm = request.value("vm", "");
    DaemonConfig config;
    {
        std::lock_guard lock(state_->mutex);
        config = state_->config.config;
    }
    // The VM must exist now: a typo is the request's error (404), not a failed task.
    auto vms = resolve_vms({vm}, config.daemon.connect_uri);
    if (!vms) return std::unexpected(vms.error());
    std::lock_guard lock(state_->mutex);
    if (state_->stopping) return fail(ErrorKind::unavailable, "the daemon is stopping");
    auto spec = repository_named(*state_, request.value("repository", ""));
    if (!spec) return std::unexpected(spec.error());
    // A job without an id: run_job backs it up as a job's backup (no retention: no keep-*).
    JobSpec job;
    job.kind = JobKind::backup;
    job.vms = {vm};
    job.repository = spec->name;
    job.method = request.value("method", "auto");
    TaskPlan plan;
    plan.kind = "backup";
    plan.job = job;
    plan.vms = *vms;
    auto id = state_->queue_request(std::move(plan), vm);
    if (!id) return std::unexpected(id.error());
    state_->start_ready_tasks();
    return json{{"task", *id}};
}

Result<json> Daemon::forget_point(const std::string& point, const std::string& repository) {
    Result<RepositorySpec> spec;
    {
        std::lock_guard lock(state_->mutex);
        spec = repository_named(*state_, repository);
    }
    if (!spec) return std::unexpected(spec.error());
    auto id = daemon::forget_point(*spec, point);
    if (!id) return std::unexpected(id.error());
    state_->log(LogLevel::info, "point " + *id + " of repository '" + spec->name + "' forgotten");
    {
        std::lock_guard lock(state_->mutex);
        state_->next_facts = {};  // the points count changed
    }
    return json{{"forgotten", *id}, {"repository", spec->name}};
}

Result<json> Daemon::prune_preview(const std::string& repository, const json& request) {
    Result<RepositorySpec> spec;
    {
        std::lock_guard lock(state_->mutex);
        spec = repository_named(*state_, repository);
    }
    if (!spec) return std::unexpected(spec.error());
    Retention keep;
    auto take = [&](const char* key, std::optional<unsigned>& slot) {
        if (auto it = request.find(key); it != request.end() && it->is_number_unsigned())
            slot = it->get<unsigned>();
    };
    take("keep_last", keep.keep_last);
    take("keep_hourly", keep.keep_hourly);
    take("keep_daily", keep.keep_daily);
    take("keep_weekly", keep.keep_weekly);
    take("keep_monthly", keep.keep_monthly);
    take("keep_yearly", keep.keep_yearly);
    auto points = daemon::prune_preview(*spec, request.value("vm", ""), keep);
    if (!points) return std::unexpected(points.error());
    return json{{"points", *points}};
}

Result<json> Daemon::schedule_preview(const std::string& expr, int count) {
    auto event = CalendarEvent::parse(expr);
    if (!event) return std::unexpected(event.error());
    json next = json::array();
    auto after = state_->clock->now();
    for (int i = 0; i < count; ++i) {
        auto at = event->next_after(after);
        if (!at) break;  // a date in the past, or the last elapse
        next.push_back(iso8601_utc(unix_seconds(*at)));
        after = *at;
    }
    return json{{"expr", expr}, {"normalized", event->normalized()}, {"next", next}};
}

json Daemon::health() {
    std::lock_guard lock(state_->mutex);
    return json{{"status", state_->stopping ? "stopping" : "ok"},
                {"version", "0.1.0"},
                {"uptime_s", unix_seconds(state_->clock->now()) - unix_seconds(state_->started)},
                {"tasks_running", state_->queue.running()},
                {"tasks_queued", state_->queue.waiting()},
                {"fingerprint", state_->fingerprint}};
}

std::string Daemon::metrics() {
    State& s = *state_;
    auto replicas_json = replicas();
    MetricsSnapshot m;
    m.version = "0.1.0";
    m.start_time = static_cast<double>(unix_seconds(s.started));
    if (auto states = s.store->vm_states()) {
        for (const auto& v : *states) {
            VmMetrics vm;
            vm.vm = v.vm;
            if (v.last_success) {
                vm.last_success = static_cast<double>(v.last_success);
                vm.last_duration_s = v.last_duration_s;
                vm.last_added_bytes = v.last_bytes_added;
                if (v.last_freeze_ms >= 0) vm.last_freeze_s = v.last_freeze_ms / 1000.0;
            }
            vm.failures_total = v.failures_total;
            m.vms.push_back(vm);
        }
    }
    std::lock_guard lock(s.mutex);
    for (const auto& [name, facts] : s.repository_facts) {
        m.repositories.push_back({name, facts.stored_bytes, facts.logical_bytes});
    }
    m.tasks_queued = s.queue.waiting();
    m.tasks_running = s.queue.running();
    m.tasks_finished = s.finished;
    return render_metrics(m) + (replicas_json ? replica_metrics_text(*replicas_json) : "");
}

Result<json> Daemon::tokens() {
    json list = json::array();
    for (const auto& t : state_->tokens->list()) {
        list.push_back(
            {{"name", t.name}, {"role", role_name(t.role)}, {"created", iso8601_utc(t.created)}});
    }
    return json{{"tokens", list}};
}

Result<json> Daemon::create_token(const std::string& name, Role role) {
    auto token = state_->tokens->create(name, role);
    if (!token) return std::unexpected(token.error());
    state_->log(LogLevel::info,
                "token '" + name + "' created (" + std::string(role_name(role)) + ")");
    return json{{"name", name}, {"role", role_name(role)}, {"token", *token}};
}

Result<json> Daemon::revoke_token(const std::string& name) {
    if (auto st = state_->tokens->revoke(name); !st) return std::unexpected(st.error());
    state_->sessions->remove_token(name);  // its browser sessions end with it
    state_->log(LogLevel::info, "token '" + name + "' revoked");
    return json{{"name", name}, {"revoked", true}};
}

}  // namespace vmshadow::daemon
