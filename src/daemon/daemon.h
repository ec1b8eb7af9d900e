// SPDX-License-Identifier: MIT
#pragma once
// Daemon: vmshadowd's service — the config, the task store, the run queue, the scheduler's
// loop, the tasks running the engine's operations, the alert watch and the API server — and
// the ApiBackend the REST API calls.
//
// Life: start() loads the config and the token store (refusing secrets others can read),
// opens the task store and marks what a killed daemon left running `interrupted` (the
// engine's leftover recovery runs with the next operation on the VM: a dead backup job,
// scratch and checkpoint are cleaned by the next backup, as after a kill of the CLI), makes
// the TLS identity, starts the API (HTTPS on [daemon] listen, and the unix socket), then the
// loop. The loop wakes at the next schedule slot (at least once a second, so clock jumps are
// seen), queues due runs (scheduler.h: catch-up, one waiting run per job), starts what the
// RunQueue lets start (each task on its own thread with a TaskContext whose progress and log
// go to the TaskStore), finishes tasks (record, per-VM state, `after` chains, alerts), trims
// history and checks "no successful backup in H hours". reload() (SIGHUP) rereads the
// config; a bad config is logged and the old one kept. stop() (SIGTERM) cancels the running
// tasks through their tokens and waits for them (the engine cleans up as on any cancel),
// marks waiting ones cancelled, stops the API.
// It is not: the process (main.cpp: flags, signals, sd_notify, pid file) or the routes.
//
// Thread-safety: the ApiBackend methods are called from the API server's threads; the loop
// runs on its own thread; one mutex guards the config, the queue and the running tasks.

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/error.h"
#include "common/task.h"
#include "daemon/api_backend.h"

namespace vmshadow::daemon {

struct DaemonOptions {
    std::filesystem::path state_dir = "/var/lib/vmshadow";
    std::filesystem::path config_file = "/etc/vmshadow/vmshadowd.toml";
    std::filesystem::path socket_path;  // "": <state-dir>/api.sock
    // Overrides [daemon] listen when set ("" = no HTTPS).
    std::optional<std::string> listen;
    // The dashboard's built front-end, served at `/` (static_files.h); nullopt: found beside
    // the executable (StaticFiles::find_root).
    std::optional<std::filesystem::path> web_dir;
    const Clock* clock = nullptr;  // nullptr: the system clock
    // The daemon's own log (stderr, or a file when detached).
    std::function<void(LogLevel, std::string_view)> log;
};

class Daemon final : public ApiBackend {
  public:
    static Result<std::unique_ptr<Daemon>> start(DaemonOptions options);
    ~Daemon() override;

    // What a client needs: the HTTPS port (0: none), the socket, the certificate's
    // fingerprint.
    std::uint16_t https_port() const;
    const std::filesystem::path& socket_path() const;
    const std::string& fingerprint() const;

    Status reload();
    // Cancels running tasks (waits up to `grace` for them), then stops everything.
    void stop(std::chrono::seconds grace = std::chrono::seconds(120));

    // ApiBackend
    Result<nlohmann::json> vms() override;
    Result<nlohmann::json> points(const std::string& vm) override;
    Result<nlohmann::json> jobs() override;
    Result<nlohmann::json> add_job(const nlohmann::json& job, const std::string& digest) override;
    Result<nlohmann::json> edit_job(const std::string& id, const nlohmann::json& job,
                                    const std::string& digest) override;
    Result<nlohmann::json> remove_job(const std::string& id, const std::string& digest) override;
    Result<nlohmann::json> run_job(const std::string& id) override;
    Result<nlohmann::json> tasks(const TaskFilter& filter) override;
    Result<nlohmann::json> task(std::int64_t id) override;
    Result<nlohmann::json> task_log(std::int64_t id, std::int64_t start,
                                    std::size_t limit) override;
    Result<nlohmann::json> abort_task(std::int64_t id) override;
    Result<nlohmann::json> repositories() override;
    Result<nlohmann::json> repository_status(const std::string& name) override;
    Result<nlohmann::json> restore(const nlohmann::json& request) override;
    Result<nlohmann::json> verify(const nlohmann::json& request) override;
    Result<nlohmann::json> backup(const nlohmann::json& request) override;
    Result<nlohmann::json> forget_point(const std::string& point,
                                        const std::string& repository) override;
    Result<nlohmann::json> prune_preview(const std::string& repository,
                                         const nlohmann::json& request) override;
    Result<nlohmann::json> schedule_preview(const std::string& expr, int count) override;
    Result<nlohmann::json> replicas() override;
    Result<nlohmann::json> replica_enable(const nlohmann::json& request) override;
    Result<nlohmann::json> replica_points(const std::string& vm) override;
    Result<nlohmann::json> replica_action(const std::string& vm, const std::string& action,
                                          const nlohmann::json& request) override;
    nlohmann::json health() override;
    std::string metrics() override;
    Result<nlohmann::json> tokens() override;
    Result<nlohmann::json> create_token(const std::string& name, Role role) override;
    Result<nlohmann::json> revoke_token(const std::string& name) override;

    struct State;  // daemon.cpp

  private:
    explicit Daemon(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace vmshadow::daemon
