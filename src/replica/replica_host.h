// SPDX-License-Identifier: MIT
#pragma once
// ReplicaHost: the replica server's side of Replica — the stores of the VMs other hosts
// replicate here, the protocol's routes (replica_protocol.h), and the operations an
// administrator runs on the replica host: test failover, stop test, failover, commit.
//
// This module is:
//   - open(): every store under each allow entry's storage folder (replica_store.h), leftovers
//     of killed cycles removed;
//   - handle(): the protocol, for a request whose client certificate was verified by the TLS
//     layer (net::Peer::client_certificate_subject); the subject is matched against the
//     allow list before the body is read (none: 401; not allowed: 403 naming it); each VM's
//     store is used under its own mutex, so cycles of different VMs run in parallel and one
//     VM's requests are serialised; a store belongs to the subject that announced it (another
//     subject: 409); one cycle in flight per VM (a new begin aborts the old one, and so does
//     30 minutes without a request); any error inside a cycle aborts it;
//   - test_failover: `<name>-test` defined from the stored domain XML on a test overlay above
//     the chosen point (new UUID, every NIC's link state down and its MAC left to libvirt,
//     no checkpoints, no autostart; disks not replicated are left out, CD-ROMs emptied, the
//     NVRAM not carried: failover_vm.h), started; replication continues meanwhile (the point is
//     pinned, not merged away); stop_test destroys and undefines only that VM and drops its
//     overlay;
//   - failover: the VM (its own name and UUID) defined on live overlays above the chosen point
//     (latest by default), started paused, a checkpoint of a new reverse chain (16 random hex,
//     virt::make_checkpoint_name) made so that reverse replication later sends only what
//     changed since, then resumed; the chain, checkpoint, point and whether it was planned
//     (POST /failover from the primary) or not (failover() here) are kept in
//     <store>/failover.json; the store's state becomes "failed-over" and cycles are refused;
//     commit drops the other points; mark_reversed retires the store (state "reversed": its
//     layers back the VM, which now runs here as a primary; it takes no more requests);
//   - reverse (POST /reverse from the new primary): this host was the primary; its shut-off VM's
//     disks become point 0 of a store (ReplicaStore::adopt) with the offered token, the VM's
//     definition is undefined (its XML is kept in the store; a replica VM must not be started
//     by accident: it would write into the base), and the primary side is told to drop its
//     link (release_primary, before the undefine: it deletes its chain from the VM). Any step
//     failing undoes the store.
//   - seeding (an announcement with "seed": {"repository", "point"} for a store with no point
//     yet): the restore point is checked while the request waits (it must be of the announced
//     VM, by name or uuid, with the announced disk targets and sizes; an encrypted repository
//     must be configured here with its password file), then the store's state is "seeding"
//     and a thread of this host restores the point's disks into qcow2 base images and makes
//     them point 0 (token "seed-<point id>"); cycles get 409 "seeding ... retry later"
//     meanwhile. A seed that fails leaves the store without a point (its last error says why;
//     the primary then sends a full copy); a daemon stopped while seeding does the same.
// Store states (ReplicaStore::state()): "" or "replicating", "seeding", "test-failover",
// "failing-over" (set before a failover's first step: a daemon killed halfway leaves it, and the
// next failover finishes it when the VM reached its reverse checkpoint or else undoes and redoes
// it), "failed-over", "reversed". A test failover sets its state first too: stop_test then
// removes what a killed one left. Errors a caller can act on are ErrorKind::conflict (HTTP 409).
// It is not: TLS (the daemon's listener), the primary side (replica_primary.h), scheduling.
//
// Thread-safety: all methods may be called from several threads at once.
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "net/http.h"

namespace vmshadow::replica {

struct AllowEntry {
    std::string subject;            // "CN=hosta": the primary's certificate subject
    std::filesystem::path storage;  // where its VMs' stores go
};

// What the primary side of this host needs to start replicating a failed-over VM back.
struct ReverseSource {
    std::string vm, uuid, domain_xml;
    std::vector<std::pair<std::string, std::uint64_t>> disks;  // target, size
    std::string peer_endpoint;   // the old primary's replica listener ("host:port")
    std::string chain_id;        // the checkpoint chain made at failover
    std::string checkpoint_xml;  // its checkpoint, the base of the first reverse cycle
    std::string token;           // = that checkpoint's name
    std::string time;
    unsigned history = 4;
    // The failover was planned (the primary sent its last changes and shut down): the old
    // primary's disks equal the reverse checkpoint's point, so the first cycle sends only
    // changes. Unplanned: they hold writes this host never received, so the first reverse
    // cycle is a resync (block hashes compared; only differing blocks sent).
    bool planned = false;
};

struct ReplicaHostOptions {
    std::vector<AllowEntry> allow;
    std::string connect_uri;   // libvirt of this host ("" : default)
    std::string own_subject;   // this host's certificate subject (for /hello)
    std::string own_endpoint;  // this host's replica listener "host:port" (for reverse)
    // Told when a reverse offer was accepted for a VM this host was the primary of: the
    // primary side removes its link for `uuid` (and deletes its checkpoint chain).
    std::function<Status(const std::string& uuid)> release_primary;
    std::function<void(LogLevel, std::string_view)> log;
    // Seeding from a repository: the password file of the repository at `path` as this
    // host's daemon config lists it ([repository.NAME] path, password-file): nullopt when it
    // is not configured here, an empty path when it is configured without one. Asked only
    // when the repository is encrypted.
    std::function<std::optional<std::filesystem::path>(const std::filesystem::path& path)>
        repository_password_file;
};

class ReplicaHost {
  public:
    static Result<std::unique_ptr<ReplicaHost>> open(ReplicaHostOptions options);
    ~ReplicaHost();
    Status set_allow(std::vector<AllowEntry> allow);  // config reload

    net::HttpResponse handle(const net::HttpRequest& request);

    // {"replicas": [ReplicaStatus role "replica"]}: see daemon/api_backend.h's replicas().
    nlohmann::json list() const;
    // {"vm", "points": [{"seq", "token", "time", "consistency"}]}; not_found.
    Result<nlohmann::json> points(const std::string& vm) const;
    Result<nlohmann::json> test_failover(const std::string& vm, std::optional<std::uint64_t> seq,
                                         TaskContext* task);
    Result<nlohmann::json> stop_test(const std::string& vm);
    Result<nlohmann::json> failover(const std::string& vm, std::optional<std::uint64_t> seq,
                                    TaskContext* task);
    Result<nlohmann::json> commit(const std::string& vm);
    // After failover: what reverse replication starts from; conflict unless the VM
    // is failed over here.
    Result<ReverseSource> reverse_source(const std::string& vm) const;
    // The reverse offer was accepted by the old primary: the store is now "reversed" (the VM
    // runs here as a primary; its layers stay as the VM's backing chain).
    Status mark_reversed(const std::string& vm);
    // Offline initial replication: applies the cycle files export-initial wrote in `dir`
    // (the same chunks and commit as over the network, checked the same way). The folder, as
    // ReplicaPrimary::export_initial writes it:
    //   <dir>/cycle.json     {"vm": VmAnnouncement, "begin": CycleBegin (full: true),
    //                         "commit": {"chunks", "frames", "sha256"},
    //                         "primary_subject": "CN=hosta" (the primary's certificate
    //                         subject: it must be on this host's allow list, and its storage
    //                         entry is where the store goes)}
    //   <dir>/chunk-<seq>.bin one chunk body each, seq in decimal without padding (chunk-0.bin,
    //                         chunk-1.bin, ...), exactly commit.chunks of them
    // (cycle.json is written last: a folder without it is an export cut off halfway)
    // (JSON shapes: replica_protocol.h). Applied as the protocol's PUT /vms/{uuid}, POST
    // cycles, PUT chunks and POST commit would be for that subject → {"vm", "point"}.
    Result<nlohmann::json> import_initial(const std::filesystem::path& dir, TaskContext* task);
    // Removes the replica of a VM (refused while a test or failed-over VM uses it).
    Result<nlohmann::json> remove(const std::string& vm);

    struct Impl;

  private:
    explicit ReplicaHost(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::replica
