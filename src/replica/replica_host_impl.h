// SPDX-License-Identifier: MIT
#pragma once
// ReplicaHost's insides (private to replica), shared by replica_host.cpp (stores, protocol),
// replica_failover.cpp (failover operations, reverse acceptance) and replica_import.cpp.
//
// Locking: Impl::mutex guards the maps and the allow list and is held only briefly; each
// VmEntry::mutex serialises one VM's requests and operations and may be held for long (a
// commit that prunes, a failover starting the VM). Order: an entry's mutex, then Impl::mutex;
// never the other way. list()/points() read each entry's summary under its own small mutex,
// so they never wait for a long operation.
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/task.h"
#include "replica/cycle_format.h"
#include "replica/replica_health.h"
#include "replica/replica_host.h"
#include "replica/replica_routes.h"
#include "replica/replica_store.h"

namespace vmshadow::replica {

// The store's free-form state (ReplicaStore::state()) as the host uses it.
inline constexpr std::string_view kStateReplicating = "replicating";
inline constexpr std::string_view kStateTest = "test-failover";
inline constexpr std::string_view kStateFailedOver = "failed-over";
inline constexpr std::string_view kStateReversed = "reversed";
// Set before a failover's first step: a daemon killed halfway leaves this, and the next
// failover finishes or redoes it (cycles are refused meanwhile).
inline constexpr std::string_view kStateFailingOver = "failing-over";
// Restoring a repository's point into the base images (replica_seed.cpp); cycles refused.
inline constexpr std::string_view kStateSeeding = "seeding";

// What a failover made, kept beside the record (<folder>/failover.json, replaced atomically)
// for commit and reverse_source. `planned`: the primary asked for it after sending its last
// changes (POST /failover {"planned": true}); an unplanned failover (run here, the primary
// lost) leaves the old primary's disks with writes this host never received, so reversing it
// must start with a resync. A record without the field reads as unplanned (the safe side).
struct FailoverRecord {
    std::uint64_t seq = 0;
    std::string chain_id, checkpoint, checkpoint_xml, time;
    bool planned = false;
};

struct InFlightCycle {
    std::string id;
    std::unique_ptr<ReplicaStore::Cycle> cycle;
    std::vector<DiskBounds> bounds;
    std::uint64_t next_seq = 0, frames = 0, bytes = 0;
    CycleDigest digest;
    Clock::time_point started;
    std::chrono::steady_clock::time_point started_steady;
    std::chrono::steady_clock::time_point last_request;  // begin, a chunk or hashes
};

// A cycle no request touched for this long has lost its primary (killed, cut off): it is
// aborted, so its qemu-nbd servers and new layers do not wait for the next begin.
inline constexpr std::chrono::minutes kStaleCycle{30};

struct VmEntry {
    std::filesystem::path folder;  // fixed at creation: read without `mutex`
    std::mutex mutex;
    std::unique_ptr<ReplicaStore> store;  // null while being created
    bool removed = false;                 // gone from the map: callers holding it give up
    std::optional<InFlightCycle> cycle;
    std::deque<CycleRecord> history;  // since this daemon started
    std::string last_error;
    std::string seed_point;  // the restore point being seeded from (short id), for messages

    // Refreshed under `mutex` after every change; read under summary_mutex.
    struct Summary {
        nlohmann::json state;  // VmReplicaState; null while the store is being created
        std::string subject;
        std::deque<CycleRecord> history;
        std::string last_error;
    };
    mutable std::mutex summary_mutex;
    Summary summary;
    Summary read_summary() const {
        std::lock_guard lock(summary_mutex);
        return summary;
    }

    const std::string& subject() const { return store->identity().primary_subject; }
    const std::string& name() const { return store->identity().vm_name; }
};

struct ReplicaHost::Impl {
    ReplicaHostOptions options;
    mutable std::mutex mutex;
    std::map<std::string, std::shared_ptr<VmEntry>> vms;  // by uuid
    // Stores of VMs reversed away from this host: their layers back the VM that now runs here
    // as a primary, so they stay open (locked) but take no requests.
    std::vector<std::unique_ptr<ReplicaStore>> retired;
    std::chrono::steady_clock::time_point last_sweep;  // under `mutex`
    // Seeding threads (replica_seed.cpp), joined by stop_seeding(); `seeding` under `mutex`.
    std::mutex seeders_mutex;
    std::vector<std::jthread> seeders;
    std::map<std::string, CancelToken> seeding;  // by uuid: cancels a running seed

    void log(LogLevel level, const std::string& line) const;
    std::optional<AllowEntry> allowed(const std::string& subject) const;
    void scan(const AllowEntry& entry);
    void adopt_store(std::unique_ptr<ReplicaStore> store);

    std::shared_ptr<VmEntry> find_uuid(const std::string& uuid) const;
    // By name or uuid (the administrator's word); not_found / conflict (a name held twice).
    Result<std::shared_ptr<VmEntry>> find_vm(const std::string& vm) const;
    // A free folder for a new store of `name`/`uuid` under `storage`.
    std::filesystem::path new_folder(const std::filesystem::path& storage, const std::string& name,
                                     const std::string& uuid) const;
    void erase(const std::string& uuid);

    // Locked entry helpers.
    void refresh(VmEntry& entry) const;
    void abort_cycle(VmEntry& entry, const std::string& why);
    void note_cycle(VmEntry& entry, bool ok, const std::string& error);
    // At most once a minute: aborts cycles idle for kStaleCycle (entries busy now are skipped).
    void sweep_stale_cycles();

    net::HttpResponse dispatch(const net::HttpRequest& request, const std::string& subject);

    // Failover operations on a locked entry (replica_failover.cpp).
    Result<nlohmann::json> failover_locked(VmEntry& entry, std::optional<std::uint64_t> seq,
                                           TaskContext* task, bool planned);
    Result<nlohmann::json> remove_locked(VmEntry& entry);
    // Seeding (replica_seed.cpp). start_seeding: on a locked entry whose store has no point:
    // checks the point and starts the restore; the error is the announcement's answer.
    Status start_seeding(const std::shared_ptr<VmEntry>& entry, const routes::SeedSpec& seed);
    void cancel_seeding(const std::string& uuid);
    void stop_seeding();  // cancels and joins every seeding thread (destruction)
    // A store left "seeding" by a stopped daemon: its restored files dropped, state cleared.
    void settle_cut_off_seeding(ReplicaStore& store) const;

    net::HttpResponse accept_reverse(const std::string& uuid, const std::string& subject,
                                     const nlohmann::json& body);
};

// The whole file when it is at most `max_bytes` (checked before reading); not_found, io.
Result<std::string> read_bounded_file(const std::filesystem::path& path, std::uint64_t max_bytes);

Result<FailoverRecord> read_failover_record(const std::filesystem::path& folder);
Status write_failover_record(const std::filesystem::path& folder, const FailoverRecord& record);

}  // namespace vmshadow::replica
