// SPDX-License-Identifier: MIT
#pragma once
// ReplicaPrimary: the primary's side of Replica — one link per replicated VM (where to, how
// often, its checkpoint chain, its health), the cycles that ship the VM's changes, planned
// failover, reverse replication and offline initial replication.
//
// This module is:
//   - links: <state-dir>/replica/<uuid>.json, replaced atomically: the VM, the peer
//     ("host:port"), interval (30 s, 5 min or 15 min, as Hyper-V offers), history (0..24),
//     application-consistent every H hours (0: never), excluded disks, bandwidth cap (MiB/s,
//     0: none), start-at, the chain id (16 random hex: the link's own libvirt checkpoint chain,
//     engine/vm_changes.h), the last acknowledged checkpoint (name and XML), the state and the
//     statistics health() needs;
//   - a cycle (run_cycle): engine::read_vm_changes from the last acknowledged checkpoint into
//     a sink that frames (cycle_format.h) and sends the extents in chunks of
//     kChunkTargetBytes (bandwidth-capped), then commits; the link records the new checkpoint
//     only after the replica's commit answered, so a cut connection or a killed daemon
//     leaves the previous checkpoint as the base of the next cycle, which the replica accepts
//     (replica_store.h's can_apply). A disk the engine reads in full while the replica already
//     holds it (the chain could not be followed: checkpoint deleted, bitmap broken after a
//     crash) is a resync: the sink asks the replica for its block hashes (kResyncBlockBytes)
//     and sends only blocks whose hash differs. A 409 "resync_required" from the replica, or a
//     chain the engine cannot follow, sets state resync-required and the next cycle is that
//     resync;
//   - health (pure: replica_health.h) from the cycle history;
//   - planned_failover: a normal cycle, the guest shut down (ACPI, bounded wait), the last
//     changes read from the shut-off VM and sent, POST /failover to the replica; state
//     "failed-over"; no write is lost;
//   - reverse (on the new primary, with ReplicaHost::reverse_source): POST /reverse to the old
//     primary, then a link whose base is the failover checkpoint: only changes are sent;
//   - export_initial: the initial cycle written as files in a folder (chunks + commit JSON)
//     for `import-initial` on the replica host; the link then continues with incrementals.
// It is not: the replica host's side (replica_host.h), scheduling decisions (the daemon asks
// due() and serialises cycles with backups of the same VM), or the REST API.
//
// Thread-safety: every method may be called from any thread; one cycle per VM at a time
// (a second run_cycle of the same VM is ErrorKind::conflict).
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/task.h"

namespace vmshadow::replica {

struct ReplicaTls {
    std::filesystem::path certificate_file, key_file, ca_file;
};

struct LinkSpec {
    std::string vm;
    std::string to;                       // "host:port" of the replica host's listener
    std::chrono::seconds interval{300};   // 30 s, 300 s or 900 s
    unsigned history = 4;                 // 0..24 earlier points kept on the replica
    unsigned app_consistent_every_h = 0;  // 0: never; 1..24
    std::vector<std::string> exclude_disks;
    unsigned bandwidth_mib = 0;           // MiB/s, 0: unlimited
    std::optional<std::string> start_at;  // ISO 8601 or "HH:MM": initial copy not before
    enum class Initial { network, offline, repository } initial = Initial::network;
    std::string seed_repository;  // initial = repository: a path the replica reads
    std::string seed_point;
};

struct ReplicaPrimaryOptions {
    std::filesystem::path state_dir;  // links under <state_dir>/replica/
    ReplicaTls tls;
    std::string own_endpoint;  // this host's replica listener, sent to the replica (reverse)
    std::string connect_uri;
    std::string scratch_dir = "/var/tmp";
    std::string runtime_dir;
    const Clock* clock = nullptr;
    std::function<void(LogLevel, std::string_view)> log;
};

class ReplicaPrimary {
  public:
    static Result<std::unique_ptr<ReplicaPrimary>> open(ReplicaPrimaryOptions options);
    ~ReplicaPrimary();
    Status set_tls(ReplicaTls tls);  // config reload

    // Checks the VM, the peer (GET /hello: both certificates verified) and announces the VM
    // (PUT /vms/{uuid}); stores the link in state "initial". The initial copy is run_cycle's
    // first cycle (network), export_initial (offline) or a seeded resync (repository).
    Result<nlohmann::json> enable(const LinkSpec& spec);
    Status pause(const std::string& vm);
    Status resume(const std::string& vm);
    // Deletes the link and its checkpoint chain; with `on_replica`, also DELETE /vms/{uuid}.
    Status remove(const std::string& vm, bool on_replica);

    // VMs whose cycle is due at `now` (interval elapsed since the last attempt, start-at
    // passed, not paused, not failed over), oldest due first; the daemon runs them when the VM
    // is free and counts a cycle missed when it could not start within its interval.
    std::vector<std::string> due(Clock::time_point now) const;
    void note_missed(const std::string& vm);
    // The next cycle compares block hashes instead of following the chain (`replica resync`).
    Status request_resync(const std::string& vm);
    // One cycle now (initial, incremental or resync as the link's state says).
    Result<nlohmann::json> run_cycle(const std::string& vm, TaskContext* task);
    Result<nlohmann::json> planned_failover(const std::string& vm, TaskContext* task);
    Result<nlohmann::json> reverse(const struct ReverseSource& source, TaskContext* task);
    Result<nlohmann::json> export_initial(const std::string& vm, const std::filesystem::path& dir,
                                          TaskContext* task);
    // The replica host accepted our VM back (reverse): drop the link and its chain.
    Status release(const std::string& uuid);

    // {"replicas": [ReplicaStatus role "primary"]} (daemon/api_backend.h's replicas()).
    nlohmann::json list() const;

    struct Impl;

  private:
    explicit ReplicaPrimary(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::replica
