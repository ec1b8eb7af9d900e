// SPDX-License-Identifier: MIT
#pragma once
// The replica protocol: what a primary's vmshadowd says to a replica host's vmshadowd, over
// HTTPS with both sides' certificates verified (mutual TLS, net/cert_authority.h). The replica
// host's listener is its own HttpServer (the daemon's [replica] listen) requiring a client
// certificate signed by the configured CA; a request is then authorised by the client
// certificate's subject against the allow list ([[replica.allow]] subject = ..., storage =
// ...: Hyper-V's "allow replication from these servers / store the files here") BEFORE its
// body is parsed: an unknown subject is 403 naming it.
//
// Routes (all under kPrefix; JSON bodies unless said; errors are {"error": "..."} with the
// status of the Error's kind, 409 for conflict):
//   GET    /hello                         → {"version": 1, "host", "subject" (the server's),
//                                             "peer" (the client's subject as seen)}
//   PUT    /vms/{uuid}                    ← VmAnnouncement; creates or updates the store
//                                           → VmReplicaState; with a seed, for a store without
//                                           a point, the point is checked (a refused seed is
//                                           the answer's error) and restored in the background
//                                           (state "seeding")
//   GET    /vms/{uuid}                    → VmReplicaState (404 when unknown)
//   DELETE /vms/{uuid}                    → {"removed": true}; 409 while a test failover or a
//                                           failed-over VM uses the store
//   POST   /vms/{uuid}/cycles             ← CycleBegin → 201 {"cycle": id}; 409 with
//                                           {"error", "resync_required": true} when the base
//                                           token is not held; an unfinished cycle of the VM
//                                           is aborted first (a new begin supersedes a dead one);
//                                           409 "seeding from restore point X: retry later"
//                                           while seeding (POST hashes too)
//   PUT    /vms/{uuid}/cycles/{id}/chunks/{seq}  ← application/octet-stream, one chunk body
//                                           (cycle_format.h), seq 0,1,2,... exactly in order
//                                           (409 otherwise) → {"frames": n}
//   POST   /vms/{uuid}/cycles/{id}/commit ← {"chunks", "frames", "sha256"} (cycle_format.h's
//                                           CycleDigest) → {"point": RecoveryPoint JSON};
//                                           any mismatch: 400 and the cycle is aborted
//   DELETE /vms/{uuid}/cycles/{id}        → {"aborted": true}
//   POST   /vms/{uuid}/hashes             ← {"disk", "block_size", "first", "count"} →
//                                           application/octet-stream, count × 32 bytes
//   POST   /vms/{uuid}/failover           ← {"planned": true} → starts the VM from the latest
//                                           point (planned failover's last step)
//                                           → {"vm", "point"}
//   POST   /vms/{uuid}/reverse            ← ReverseOffer: the new primary (the old replica
//                                           host) asks the old primary to become its replica,
//                                           adopting its shut-off VM's disks as point 0 with
//                                           the offered token → VmReplicaState
// JSON shapes:
//   VmAnnouncement {"name", "uuid", "domain_xml", "disks": [{"target", "size"}], "history",
//                   "primary_endpoint": "host:port", "seed": {"repository" (a path on the
//                   replica host), "point" (id, prefix or NAME@latest)} (optional)}
//   VmReplicaState {"name", "uuid", "disks": [{"target", "size"}], "state", "history",
//                   "latest": RecoveryPoint|null,
//                   "points": [RecoveryPoint...]}
//   RecoveryPoint  {"seq", "token", "time", "consistency"}
//   CycleBegin     {"id", "base_token", "token", "time", "consistency", "full",
//                   "disks": [{"target", "size"}]}
//   ReverseOffer   = VmAnnouncement + {"token", "time"}
// Sizes: JSON bodies ≤ 1 MiB (domain XML included), chunk bodies ≤ kMaxChunkBytes; a uuid
// path segment is checked as a UUID, a cycle id as ≤ 64 hex characters, seq ≤ 10^7.
//
// It is not: the HTTP machinery (src/net/), the store (replica_store.h), scheduling.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace vmshadow::replica {

inline constexpr std::string_view kPrefix = "/replica/v1";
inline constexpr int kProtocolVersion = 1;
inline constexpr std::size_t kMaxJsonBody = 1u << 20;
// What a sender puts in one chunk before sending it (frames are added until it passes this).
inline constexpr std::size_t kChunkTargetBytes = 16u << 20;
inline constexpr std::uint64_t kResyncBlockBytes = 64u << 10;
inline constexpr std::uint64_t kMaxHashesPerRequest = 65536;

}  // namespace vmshadow::replica
