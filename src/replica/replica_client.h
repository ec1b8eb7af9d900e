// SPDX-License-Identifier: MIT
#pragma once
// ReplicaClient: the primary's calls of the replica protocol (replica_protocol.h) to one
// replica host's listener, over HTTPS with both certificates verified (the [replica] ca,
// certificate and key).
//
// This module is: one method per route, each with a bounded timeout; the replica's error
// answer ({"error"}) becomes an Error of the status's kind naming the peer; a TLS failure
// (untrusted or expired certificate) is permission naming the peer. Only calls that change
// nothing on the replica (hello, the VM's state, block hashes) are retried (3 attempts, on a
// refused connection or a timeout); a chunk or a commit is never sent twice by this module —
// the cycle decides (a cycle cut off is sent again as a whole).
// It is not: the cycle's logic (cycle_sender.h) or the link (replica_link.h). An interface,
// so that the sender's unit tests answer it with a fake.
//
// Thread-safety: each call opens its own connection; calls may run on several threads.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "replica/replica_primary.h"

namespace vmshadow::replica {

using BlockHash = std::array<std::byte, 32>;

// POST /cycles' answer: the cycle id, or the replica's word that it cannot apply the base.
struct CycleStart {
    std::string cycle;
    bool resync_required = false;
    std::string message;
};

class ReplicaClient {
  public:
    virtual ~ReplicaClient() = default;
    virtual const std::string& peer() const = 0;
    virtual Result<nlohmann::json> hello() = 0;
    virtual Result<nlohmann::json> announce(const std::string& uuid,
                                            const nlohmann::json& announcement) = 0;
    // not_found when the replica does not know the VM.
    virtual Result<nlohmann::json> vm_state(const std::string& uuid) = 0;
    virtual Result<CycleStart> begin_cycle(const std::string& uuid,
                                           const nlohmann::json& begin) = 0;
    virtual Status put_chunk(const std::string& uuid, const std::string& cycle, std::uint64_t seq,
                             std::string body) = 0;
    virtual Result<nlohmann::json> commit_cycle(const std::string& uuid, const std::string& cycle,
                                                const nlohmann::json& digest) = 0;
    virtual Status abort_cycle(const std::string& uuid, const std::string& cycle) = 0;
    virtual Result<std::vector<BlockHash>> hashes(const std::string& uuid, const std::string& disk,
                                                  std::uint64_t block_size, std::uint64_t first,
                                                  std::uint64_t count) = 0;
    virtual Result<nlohmann::json> failover(const std::string& uuid,
                                            const nlohmann::json& request) = 0;
    virtual Result<nlohmann::json> reverse(const std::string& uuid,
                                           const nlohmann::json& offer) = 0;
    virtual Result<nlohmann::json> remove(const std::string& uuid) = 0;
};

// `peer`: "host:port" (IPv6 as "[::1]:8471"); the host must match the peer's certificate.
Result<std::unique_ptr<ReplicaClient>> connect_replica(const std::string& peer,
                                                       const ReplicaTls& tls);

}  // namespace vmshadow::replica
