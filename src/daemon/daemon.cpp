// SPDX-License-Identifier: MIT
// Daemon: start-up, the scheduler's loop, reload and stop (see daemon.h).
#include "daemon/daemon.h"

#include <unistd.h>

#include <filesystem>

#include "daemon/alert_transport.h"
#include "daemon/daemon_state.h"
#include "net/tls_identity.h"

namespace vmshadow::daemon {
namespace {

namespace fs = std::filesystem;

// The loop looks at the clock at least this often, so a clock jump or a config edit is seen
// within a second; a wake costs microseconds (idle CPU stays far below 0.5 %).
constexpr auto kMaxSleep = std::chrono::seconds(1);
constexpr auto kHousekeeping = std::chrono::seconds(60);
constexpr auto kFactsRefresh = std::chrono::minutes(5);

std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
    return buf;
}

Result<net::TlsListener> parse_listen(const std::string& listen, const net::TlsIdentity& id) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0) {
        return fail(ErrorKind::invalid_argument,
                    "[daemon] listen '" + listen + "': use ADDRESS:PORT, e.g. 127.0.0.1:8470");
    }
    std::string address = listen.substr(0, colon);
    if (address.size() > 2 && address.front() == '[' && address.back() == ']') {
        address = address.substr(1, address.size() - 2);
    }
    std::uint32_t port = 0;
    for (char c : listen.substr(colon + 1)) {
        if (c < '0' || c > '9' || port > 65535) {
            return fail(ErrorKind::invalid_argument,
                        "[daemon] listen '" + listen + "': the port must be 0..65535");
        }
        port = port * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (port > 65535) {
        return fail(ErrorKind::invalid_argument,
                    "[daemon] listen '" + listen + "': the port must be 0..65535");
    }
    net::TlsListener l;
    l.address = address;
    l.port = static_cast<std::uint16_t>(port);
    l.certificate_file = id.certificate_file;
    l.key_file = id.key_file;
    return l;
}

// Looks up the VMs of the pending runs and of the jobs the stale-backup watch covers with
// the lock released (libvirt may take a while), then queues the runs.
void queue_pending(Daemon::State& s, std::unique_lock<std::mutex>& lock, bool watch_stale) {
    auto runs = std::move(s.pending_runs);
    s.pending_runs.clear();
    std::vector<JobSpec> watched;
    if (watch_stale) {
        for (const auto& job : s.config.config.jobs) {
            if (job.kind == JobKind::backup && job.alert_after_hours && job.enabled) {
                watched.push_back(job);
            }
        }
    }
    if (runs.empty() && watched.empty()) return;
    const std::string uri = s.config.config.daemon.connect_uri;
    lock.unlock();
    std::vector<std::optional<Result<std::vector<std::string>>>> found;
    for (const auto& [job, trigger] : runs) found.push_back(Daemon::State::lookup_vms(job, uri));
    std::map<std::string, std::vector<std::string>> vms_of_job;
    for (const auto& job : watched) {
        if (auto vms = resolve_vms(job.vms, uri)) vms_of_job[job.id] = *vms;
    }
    lock.lock();
    for (std::size_t i = 0; i < runs.size(); ++i) {
        (void)s.queue_job(runs[i].first, runs[i].second, found[i]);
    }
    if (watch_stale) s.check_stale_backups(vms_of_job);
}

void loop(Daemon::State& s) {
    std::unique_lock lock(s.mutex);
    while (!s.stopping) {
        s.reap_finished_tasks();
        auto now = s.clock->now();
        auto decision = decide_runs(s.config.config.jobs, s.last_slots, now);
        for (const auto& [job, slot] : decision.last_slots) {
            auto it = s.last_slots.find(job);
            if (it == s.last_slots.end() || it->second != slot) {
                s.last_slots[job] = slot;
                (void)s.store->set_job_slot(job, slot);
            }
        }
        for (const auto& run : decision.runs) {
            const JobSpec* job = s.config.config.job(run.job);
            if (job) s.pending_runs.emplace_back(*job, run.catch_up ? "catch-up" : "schedule");
        }
        auto steady = std::chrono::steady_clock::now();
        bool housekeeping = steady >= s.next_housekeeping;
        if (housekeeping) {
            s.next_housekeeping = steady + kHousekeeping;
            const auto& d = s.config.config.daemon;
            (void)s.store->prune_history(d.keep_tasks, std::chrono::hours(24) * d.keep_task_days);
        }
        queue_pending(s, lock, housekeeping);
        if (s.stopping) break;
        s.queue_replica_cycles();
        s.start_ready_tasks();
        if (steady >= s.next_facts) {
            s.next_facts = steady + kFactsRefresh;
            s.refresh_repository_facts(lock);
            if (s.stopping) break;
        }
        if (!s.pending_runs.empty()) continue;  // an `after` chain came in meanwhile
        auto sleep = kMaxSleep;
        if (decision.next_wake) {
            auto until = *decision.next_wake - s.clock->now();
            if (until < sleep) sleep = std::chrono::duration_cast<std::chrono::seconds>(until);
        }
        s.wake.wait_for(lock, std::max<std::chrono::steady_clock::duration>(
                                  sleep, std::chrono::milliseconds(10)));
    }
}

}  // namespace

Daemon::Daemon(std::unique_ptr<State> state) : state_(std::move(state)) {}

Daemon::~Daemon() {
    stop(std::chrono::seconds(30));
}

Result<std::unique_ptr<Daemon>> Daemon::start(DaemonOptions options) {
    auto s = std::make_unique<State>();
    s->options = std::move(options);
    s->clock = s->options.clock ? s->options.clock : &system_clock();
    s->started = s->clock->now();
    const fs::path& dir = s->options.state_dir;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return fail(ErrorKind::io, "state dir " + dir.string() + ": " + ec.message());
    fs::permissions(dir, fs::perms::owner_all, ec);

    auto loaded = load_config(s->options.config_file);
    if (!loaded) return std::unexpected(loaded.error());
    s->config = std::move(*loaded);
    const auto& settings = s->config.config.daemon;
    s->queue.set_limits(settings.max_concurrent_backups, settings.max_concurrent_tasks);

    auto tokens = TokenStore::open(dir / "tokens.json", *s->clock);
    if (!tokens) return std::unexpected(tokens.error());
    s->tokens = std::move(*tokens);
    auto store = TaskStore::open(dir / "state.db", *s->clock);
    if (!store) return std::unexpected(store.error());
    s->store = std::move(*store);
    auto interrupted = s->store->mark_interrupted();
    if (!interrupted) return std::unexpected(interrupted.error());
    for (const auto& t : *interrupted) {
        s->log(LogLevel::warning, "task " + std::to_string(t.id) + " (" + t.kind + " " + t.target +
                                      ") was interrupted by the daemon's stop; the "
                                      "next run cleans up what it left");
    }
    for (const auto& job : s->config.config.jobs) {
        auto st = s->store->job_state(job.id);
        if (st && st->last_slot) s->last_slots[job.id] = *st->last_slot;
    }

    s->alert_transport = std::make_unique<NetAlertTransport>();
    State* raw = s.get();
    s->alerts =
        std::make_unique<AlertSender>(s->config.config.alerts, host_name(), *s->alert_transport,
                                      [raw](LogLevel level, std::string_view line) {
                                          raw->log(level, "alert: " + std::string(line));
                                      });

    auto identity = net::ensure_tls_identity(dir);
    if (!identity) return std::unexpected(identity.error());
    s->fingerprint = identity->sha256_fingerprint;
    s->socket_path = s->options.socket_path.empty() ? dir / "api.sock" : s->options.socket_path;
    net::HttpServerOptions server;
    server.threads = settings.api_threads;
    server.unix_sockets.push_back({s->socket_path, 0600});
    std::string listen = s->options.listen.value_or(settings.listen);
    if (!listen.empty()) {
        auto l = parse_listen(listen, *identity);
        if (!l) return std::unexpected(l.error());
        server.tls.push_back(*l);
    }
    auto daemon = std::unique_ptr<Daemon>(new Daemon(std::move(s)));
    State& st = *daemon->state_;
    st.sessions = std::make_unique<SessionStore>(*st.clock);
    std::error_code exe_error;
    auto exe = std::filesystem::read_symlink("/proc/self/exe", exe_error);
    st.web = std::make_unique<StaticFiles>(StaticFiles::find_root(st.options.web_dir, exe));
    if (st.web->root())
        st.log(LogLevel::info, "dashboard: " + st.web->root()->string());
    else
        st.log(LogLevel::info, "dashboard: not built (no web directory), / answers 404");
    st.routes = std::make_unique<ApiRoutes>(
        *daemon, *st.tokens,
        [&st](std::string_view what, std::string_view detail) {
            st.log(LogLevel::warning, "api " + std::string(what) + ": " + std::string(detail));
        },
        st.sessions.get(), st.web.get());
    auto started = net::HttpServer::start(
        server, [&st](const net::HttpRequest& r) { return st.routes->handle(r); });
    if (!started) return std::unexpected(started.error().with_context("API"));
    st.server = std::move(*started);
    if (auto replica = st.configure_replica(st.config.config); !replica)
        return std::unexpected(replica.error());
    st.loop = std::thread([&st] { loop(st); });
    return daemon;
}

std::uint16_t Daemon::https_port() const {
    return state_->server && !state_->config.config.daemon.listen.empty()
               ? state_->server->tls_port()
               : 0;
}

const std::filesystem::path& Daemon::socket_path() const {
    return state_->socket_path;
}
const std::string& Daemon::fingerprint() const {
    return state_->fingerprint;
}

Status Daemon::reload() {
    auto loaded = load_config(state_->options.config_file);
    if (!loaded) {
        state_->log(LogLevel::error,
                    "reload: " + loaded.error().message() + " (kept the old config)");
        return std::unexpected(loaded.error());
    }
    if (auto replica = state_->configure_replica(loaded->config); !replica) {
        state_->log(LogLevel::error,
                    "reload: " + replica.error().message() + " (kept the old config)");
        return std::unexpected(replica.error());
    }
    std::lock_guard lock(state_->mutex);
    state_->config = std::move(*loaded);
    const auto& d = state_->config.config.daemon;
    state_->queue.set_limits(d.max_concurrent_backups, d.max_concurrent_tasks);
    if (state_->alerts) state_->alerts->set_targets(state_->config.config.alerts);
    state_->log(LogLevel::info, "reloaded " + state_->options.config_file.string());
    state_->wake.notify_all();
    return {};
}

void Daemon::stop(std::chrono::seconds grace) {
    State& s = *state_;
    {
        std::lock_guard lock(s.mutex);
        if (s.stopping && !s.loop.joinable()) return;
        s.stopping = true;
        for (auto& [id, plan] : s.waiting) {
            s.queue.remove_waiting(id);
            if (plan.internal) continue;  // a routine replica cycle: no task record
            (void)s.store->finish(id, TaskState::cancelled, "{}",
                                  Error(ErrorKind::cancelled, "the daemon stopped before it ran"));
        }
        s.waiting.clear();
        for (auto& [id, task] : s.running) task->cancel.request();
        s.wake.notify_all();
    }
    if (s.loop.joinable()) s.loop.join();
    // The engine honours a cancel within seconds; past the grace the threads are left to the
    // process's exit (their operations' leftovers are recovered by the next run).
    auto deadline = std::chrono::steady_clock::now() + grace;
    for (;;) {
        std::unique_lock lock(s.mutex);
        s.reap_finished_tasks();
        if (s.running.empty() || std::chrono::steady_clock::now() >= deadline) break;
        s.wake.wait_for(lock, std::chrono::milliseconds(100));
    }
    {
        std::lock_guard lock(s.mutex);
        for (auto& [id, task] : s.running) {
            if (task->thread.joinable()) task->thread.detach();
        }
    }
    if (s.server) s.server->stop();
    if (s.replica_server) s.replica_server->stop();
    s.alerts.reset();
}

}  // namespace vmshadow::daemon
