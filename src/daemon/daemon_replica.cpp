// SPDX-License-Identifier: MIT
// The daemon's Replica: its [replica] listener (mutual TLS) serving replica::ReplicaHost, the
// primary side's cycles (replica::ReplicaPrimary) run when due and the VM is free, and the
// API's replica methods.
//
// Cycles: the loop asks ReplicaPrimary::due() every pass and queues each due VM in the
// RunQueue holding the VM, so a cycle and a backup of one VM never run at once. A routine
// cycle is an internal run (not in the task store: one every 30 s would bury the task list;
// its outcome is the link's health and last error); the initial copy, a resync and every
// administrator's action are tasks with logs. A cycle still waiting after its interval is a
// missed cycle (note_missed), counted once per interval it waits.
#include <nlohmann/json.hpp>

#include "daemon/daemon.h"
#include "daemon/daemon_state.h"
#include "daemon/metrics.h"
#include "net/cert_authority.h"
#include "replica/cycle_format.h"

namespace vmshadow::daemon {

namespace {

using json = nlohmann::json;

Error not_configured() {
    return Error(ErrorKind::unavailable,
                 "replica is not configured on this host: add a [replica] section to the "
                 "daemon's config (docs/REPLICA.md)");
}

Result<net::TlsListener> replica_listener(const ReplicaSettings& r) {
    auto colon = r.listen.rfind(':');
    std::string address = r.listen.substr(0, colon);
    if (address.size() > 2 && address.front() == '[' && address.back() == ']')
        address = address.substr(1, address.size() - 2);
    net::TlsListener l;
    l.address = address;
    l.port = static_cast<std::uint16_t>(std::stoul(r.listen.substr(colon + 1)));
    l.certificate_file = r.certificate;
    l.key_file = r.key;
    l.client_ca_file = r.ca;
    return l;
}

OperationOutcome outcome_of(const Result<json>& result) {
    OperationOutcome o;
    if (result)
        o.result = *result;
    else
        o.error = result.error();
    return o;
}

// The request's optional point ("point": seq).
std::optional<std::uint64_t> point_of(const json& request) {
    auto it = request.find("point");
    if (it == request.end() || !it->is_number_unsigned()) return std::nullopt;
    return it->get<std::uint64_t>();
}

Result<replica::LinkSpec> spec_of(const json& r) {
    try {
        replica::LinkSpec spec;
        spec.vm = r.at("vm").get<std::string>();
        spec.to = r.at("to").get<std::string>();
        spec.interval = std::chrono::seconds(r.value("interval_s", 300));
        spec.history = r.value("history", 4u);
        spec.app_consistent_every_h = r.value("app_consistent_every_h", 0u);
        spec.exclude_disks = r.value("exclude_disks", std::vector<std::string>{});
        spec.bandwidth_mib = r.value("bandwidth_mib", 0u);
        if (r.contains("start_at")) spec.start_at = r["start_at"].get<std::string>();
        std::string initial = r.value("initial", "network");
        if (initial == "offline")
            spec.initial = replica::LinkSpec::Initial::offline;
        else if (initial == "repository")
            spec.initial = replica::LinkSpec::Initial::repository;
        spec.seed_repository = r.value("seed_repository", "");
        spec.seed_point = r.value("seed_point", "");
        return spec;
    } catch (const json::exception& e) {
        return fail(ErrorKind::invalid_argument, std::string("replica enable: ") + e.what());
    }
}

}  // namespace

// The replica families of the metrics (vmshadow_replica_*), from the replicas JSON.
std::string replica_metrics_text(const json& replicas) {
    return render_replica_metrics(replicas);
}

Status Daemon::State::start_replica_listener(const ReplicaSettings& r, const std::string& subject) {
    auto listener = replica_listener(r);
    if (!listener) return fail(listener.error());
    net::HttpServerOptions server;
    server.tls.push_back(*listener);
    server.threads = 4;
    server.max_body_bytes = replica::kMaxChunkBytes;
    // A body is read before the handler sees the subject (the TLS layer already checked the
    // certificate): few connections bound the memory a verified but disallowed peer can make
    // us hold (8 × 36 MiB). A primary sends one chunk at a time per VM; more wait.
    server.max_connections = 8;
    server.idle_timeout = std::chrono::seconds(120);
    // A peer refused for its certificate (another CA, expired) is named in the log.
    server.log = [this](std::string_view line) { log(LogLevel::warning, line); };
    // Bound before the ReplicaHost exists, so that the endpoint peers are told carries the
    // port a listen of port 0 got; until the host is there, requests are answered 503.
    auto started = net::HttpServer::start(server, [this](const net::HttpRequest& request) {
        replica::ReplicaHost* host = replica_host_ready.load();
        if (!host) {
            net::HttpResponse busy;
            busy.status = 503;
            busy.body = R"({"error": "the replica service is starting"})";
            return busy;
        }
        return host->handle(request);
    });
    if (!started) return fail(started.error().with_context("[replica] listen " + r.listen));
    std::string bound = listener->address.find(':') != std::string::npos
                            ? "[" + listener->address + "]"
                            : listener->address;
    bound += ":" + std::to_string((*started)->tls_port());
    log(LogLevel::info, "replica listener on " + bound + " as " + subject);
    std::lock_guard lock(mutex);
    replica_server = std::move(*started);
    replica_listen = r.listen;
    replica_bound = bound;
    return {};
}

Status Daemon::State::configure_replica(const DaemonConfig& config) {
    if (!config.replica) {
        if (replica_primary || replica_host)
            log(LogLevel::warning,
                "the [replica] section was removed: Replica keeps running until the daemon "
                "restarts");
        return {};
    }
    const ReplicaSettings& r = *config.replica;
    // Our own certificate must be one the peers accept: said now, not at the first cycle.
    if (auto ok = net::verify_certificate(r.certificate, r.ca); !ok)
        return fail(ok.error().with_context("[replica] certificate"));
    auto facts = net::read_certificate(r.certificate);
    if (!facts) return fail(facts.error().with_context("[replica] certificate"));
    replica::ReplicaTls tls{r.certificate, r.key, r.ca};
    std::vector<replica::AllowEntry> allow;
    for (const auto& a : r.allow) allow.push_back({a.subject, a.storage});
    auto logger = [this](LogLevel level, std::string_view line) { log(level, line); };

    if (!replica_server && !r.listen.empty()) {
        if (auto ok = start_replica_listener(r, facts->subject); !ok) return ok;
    } else if (replica_server && r.listen != replica_listen) {
        log(LogLevel::warning, "[replica] listen changed to \"" + r.listen +
                                   "\": the listener moves at the daemon's restart");
    }
    // What peers are told: the configured endpoint, else the address and port bound.
    std::string own_endpoint = !r.endpoint.empty() ? r.endpoint : replica_bound;

    if (!replica_primary) {
        replica::ReplicaPrimaryOptions o;
        o.state_dir = options.state_dir;
        o.tls = tls;
        o.own_endpoint = own_endpoint;
        o.connect_uri = config.daemon.connect_uri;
        o.scratch_dir = config.daemon.scratch_dir;
        o.clock = clock;
        o.log = logger;
        auto primary = replica::ReplicaPrimary::open(std::move(o));
        if (!primary) return fail(primary.error());
        std::lock_guard lock(mutex);
        replica_primary = std::move(*primary);
    } else if (auto ok = replica_primary->set_tls(tls); !ok) {
        return ok;
    }
    if (!replica_host) {
        replica::ReplicaHostOptions o;
        o.allow = allow;
        o.connect_uri = config.daemon.connect_uri;
        o.own_subject = facts->subject;
        o.own_endpoint = own_endpoint;
        replica::ReplicaPrimary* primary = replica_primary.get();
        o.release_primary = [primary](const std::string& uuid) { return primary->release(uuid); };
        o.log = logger;
        // A seed's repository is found by its path among this host's [repository.NAME]s.
        o.repository_password_file =
            [this](const std::filesystem::path& path) -> std::optional<std::filesystem::path> {
            std::error_code ec;
            auto wanted = std::filesystem::weakly_canonical(path, ec);
            if (ec) wanted = path;
            std::lock_guard lock(mutex);
            for (const auto& [name, spec] : this->config.config.repositories) {
                auto have = std::filesystem::weakly_canonical(spec.path, ec);
                if ((ec ? spec.path : have) == wanted) return spec.password_file;
            }
            return std::nullopt;
        };
        auto host = replica::ReplicaHost::open(std::move(o));
        if (!host) return fail(host.error());
        std::lock_guard lock(mutex);
        replica_host = std::move(*host);
        replica_host_ready.store(replica_host.get());
    } else if (auto ok = replica_host->set_allow(allow); !ok) {
        return ok;
    }
    return {};
}

Result<std::int64_t> Daemon::State::queue_replica_task(
    const std::string& kind, const std::string& vm,
    std::function<OperationOutcome(TaskContext&)> action, bool hold_vm) {
    if (stopping) return fail(ErrorKind::unavailable, "the daemon is stopping");
    TaskPlan plan;
    plan.kind = kind;
    if (hold_vm) plan.vms = {vm};
    plan.action = std::move(action);
    auto id = store->create(kind, "", vm, "api");
    if (!id) return id;
    plan.id = *id;
    (void)store->append_log(*id, LogLevel::info, "queued");
    QueuedTask q;
    q.id = plan.id;
    q.vms = plan.vms;
    queue.push(q);
    waiting.emplace(*id, std::move(plan));
    wake.notify_all();
    return id;
}

void Daemon::State::queue_replica_cycles() {
    if (!replica_primary || stopping) return;
    auto now = clock->now();
    std::map<std::string, json> status;
    // The list is kept: a range-for over a temporary's member would read freed memory.
    const json list = replica_primary->list();
    for (const auto& r : list["replicas"])
        if (r.is_object()) status[r.value("vm", "")] = r;
    for (auto& [vm, since] : replica_waiting_since) {
        auto interval = std::chrono::seconds(
            status[vm].is_object() ? status[vm].value("interval_s", 300) : 300);
        if (now - since >= interval) {
            replica_primary->note_missed(vm);
            since += interval;
            log(LogLevel::warning, "replica: vm '" + vm + "': a cycle missed (the VM is busy)");
        }
    }
    for (const auto& vm : replica_primary->due(now)) {
        if (replica_cycles.contains(vm)) continue;
        replica::ReplicaPrimary* primary = replica_primary.get();
        auto action = [primary, vm](TaskContext& task) {
            return outcome_of(primary->run_cycle(vm, &task));
        };
        const json s = status[vm].is_object() ? status[vm] : json::object();
        std::string state = s.value("state", "");
        bool awaiting_import = s.value("awaiting_import", false);
        if ((state == "initial" || state == "resync-required") && !awaiting_import) {
            // The initial copy and a resync are long: tasks with logs.
            auto id = queue_replica_task(state == "initial" ? "replica-initial" : "replica-resync",
                                         vm, action);
            if (!id) {
                log(LogLevel::error, "replica: vm '" + vm + "': " + id.error().message());
                continue;
            }
            replica_cycles[vm] = *id;
        } else {
            TaskPlan plan;
            plan.id = next_internal_id--;
            plan.kind = "replica-cycle";
            plan.vms = {vm};
            plan.internal = true;
            plan.action = action;
            QueuedTask q;
            q.id = plan.id;
            q.vms = plan.vms;
            queue.push(q);
            replica_cycles[vm] = plan.id;
            waiting.emplace(plan.id, std::move(plan));
        }
        replica_waiting_since[vm] = now;
    }
}

Result<json> Daemon::replicas() {
    replica::ReplicaPrimary* primary;
    replica::ReplicaHost* host;
    {
        std::lock_guard lock(state_->mutex);
        primary = state_->replica_primary.get();
        host = state_->replica_host.get();
    }
    json all = json::array();
    for (json list :
         {primary ? primary->list() : json::object(), host ? host->list() : json::object()})
        if (list.contains("replicas") && list["replicas"].is_array())
            for (auto& r : list["replicas"]) all.push_back(std::move(r));
    return json{{"replicas", all}};
}

Result<json> Daemon::replica_enable(const json& request) {
    replica::ReplicaPrimary* primary;
    {
        std::lock_guard lock(state_->mutex);
        primary = state_->replica_primary.get();
    }
    if (!primary) return std::unexpected(not_configured());
    auto spec = spec_of(request);
    if (!spec) return std::unexpected(spec.error());
    // libvirt and the replica host are asked without the daemon's lock.
    auto status = primary->enable(*spec);
    if (!status) return status;
    std::lock_guard lock(state_->mutex);
    state_->wake.notify_all();
    return status;
}

Result<json> Daemon::replica_points(const std::string& vm) {
    replica::ReplicaHost* host;
    {
        std::lock_guard lock(state_->mutex);
        host = state_->replica_host.get();
    }
    if (!host) return std::unexpected(not_configured());
    return host->points(vm);
}

Result<json> Daemon::replica_action(const std::string& vm, const std::string& action,
                                    const json& body) {
    const json request = body.is_object() ? body : json::object();
    State& s = *state_;
    std::unique_lock lock(s.mutex);
    replica::ReplicaPrimary* primary = s.replica_primary.get();
    replica::ReplicaHost* host = s.replica_host.get();
    if (!primary || !host) return std::unexpected(not_configured());
    auto task = [&](const std::string& kind, std::function<OperationOutcome(TaskContext&)> run,
                    bool hold_vm = true) -> Result<json> {
        auto id = s.queue_replica_task(kind, vm, std::move(run), hold_vm);
        if (!id) return std::unexpected(id.error());
        if (kind == "replica-cycle" || kind == "replica-resync") s.replica_cycles[vm] = *id;
        s.start_ready_tasks();
        return json{{"task", *id}};
    };
    auto quick = [&](const Status& st) -> Result<json> {
        if (!st) return std::unexpected(st.error());
        return json{{"ok", true}, {"vm", vm}, {"action", action}};
    };
    if (action == "cycle")
        return task("replica-cycle", [primary, vm](TaskContext& t) {
            return outcome_of(primary->run_cycle(vm, &t));
        });
    if (action == "resync") {
        if (auto ok = primary->request_resync(vm); !ok) return std::unexpected(ok.error());
        return task("replica-resync", [primary, vm](TaskContext& t) {
            return outcome_of(primary->run_cycle(vm, &t));
        });
    }
    if (action == "planned-failover")
        return task("replica-planned-failover", [primary, vm](TaskContext& t) {
            return outcome_of(primary->planned_failover(vm, &t));
        });
    if (action == "export-initial") {
        std::string dir = request.value("dir", "");
        return task("replica-export-initial", [primary, vm, dir](TaskContext& t) {
            return outcome_of(primary->export_initial(vm, dir, &t));
        });
    }
    if (action == "test-failover") {
        auto point = point_of(request);
        return task("replica-test-failover", [host, vm, point](TaskContext& t) {
            return outcome_of(host->test_failover(vm, point, &t));
        });
    }
    if (action == "failover") {
        auto point = point_of(request);
        return task("replica-failover", [host, vm, point](TaskContext& t) {
            return outcome_of(host->failover(vm, point, &t));
        });
    }
    if (action == "reverse")
        return task("replica-reverse", [primary, host, vm](TaskContext& t) -> OperationOutcome {
            auto source = host->reverse_source(vm);
            if (!source) return outcome_of(Result<json>(std::unexpected(source.error())));
            auto reversed = primary->reverse(*source, &t);
            if (!reversed) return outcome_of(reversed);
            if (auto ok = host->mark_reversed(vm); !ok)
                return outcome_of(Result<json>(std::unexpected(ok.error())));
            return outcome_of(reversed);
        });
    if (action == "import-initial") {
        std::string dir = request.value("dir", "");
        return task(
            "replica-import-initial",
            [host, dir](TaskContext& t) { return outcome_of(host->import_initial(dir, &t)); },
            false);
    }
    // Quick actions: answered at once, without the daemon's lock (files, libvirt, the peer).
    lock.unlock();
    if (action == "pause") return quick(primary->pause(vm));
    if (action == "resume") {
        auto r = quick(primary->resume(vm));
        std::lock_guard relock(s.mutex);
        s.wake.notify_all();
        return r;
    }
    if (action == "stop-test") return host->stop_test(vm);
    if (action == "commit") return host->commit(vm);
    if (action == "remove") {
        auto removed = primary->remove(vm, request.value("on_replica", false));
        if (removed || removed.error().kind() != ErrorKind::not_found) return quick(removed);
        // Not replicated from here: the replica of a VM kept on this host.
        return host->remove(vm);
    }
    return fail(ErrorKind::invalid_argument, "no replica action '" + action + "'");
}

}  // namespace vmshadow::daemon
