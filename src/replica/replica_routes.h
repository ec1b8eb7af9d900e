// SPDX-License-Identifier: MIT
#pragma once
// The replica protocol's requests, taken apart and checked (private to replica): which route
// a method and path name, and each JSON body read into a typed value with every field's type,
// size and range checked (replica_protocol.h's shapes and limits). Hostile input is refused
// with invalid_argument naming the field; nothing here throws. Also the protocol's JSON
// answers and the HTTP status of an error kind.
#include <cstdint>
#include <expected>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "net/http.h"
#include "replica/replica_store.h"

namespace vmshadow::replica::routes {

enum class RouteKind {
    hello,
    put_vm,
    get_vm,
    delete_vm,
    begin_cycle,
    put_chunk,
    commit_cycle,
    abort_cycle,
    hashes,
    failover,
    reverse,
};

struct Route {
    RouteKind kind = RouteKind::hello;
    std::string uuid;       // checked: lower-case 8-4-4-4-12 hex
    std::string cycle_id;   // checked: 1..64 hex characters
    std::uint64_t seq = 0;  // checked: ≤ kMaxChunkSeq
};

inline constexpr std::uint64_t kMaxChunkSeq = 10'000'000;
inline constexpr std::size_t kMaxDisks = 64;
inline constexpr std::size_t kMaxTokenChars = 128;
inline constexpr std::size_t kMaxNameChars = 128;

// The route of a request, or the response refusing it (404 unknown path, 405 wrong method,
// 400 a malformed uuid, cycle id or seq).
std::expected<Route, net::HttpResponse> match(std::string_view method, std::string_view path);

bool is_uuid(std::string_view text);
bool is_cycle_id(std::string_view text);
bool is_token(std::string_view text);
bool is_disk_target(std::string_view text);
// Fit to be a folder name: no '/', no control character, not starting with '.'.
bool is_vm_name(std::string_view text);

// A JSON object of at most `max_bytes` and 32 levels.
Result<nlohmann::json> parse_object(std::string_view body, std::size_t max_bytes);

// Initial replication seeded from a restore point of a repository this host reads.
struct SeedSpec {
    std::string repository;  // an absolute path on this host
    std::string point;       // an id, a unique prefix or NAME@latest
};

struct Announcement {
    std::string name, uuid, domain_xml, primary_endpoint;
    std::vector<StoreDisk> disks;
    unsigned history = 4;
    std::optional<SeedSpec> seed;  // "seed": {"repository", "point"}
};
Result<Announcement> parse_announcement(const nlohmann::json& body);

struct BeginRequest {
    CycleHeader header;
    std::vector<StoreDisk> disks;
};
Result<BeginRequest> parse_begin(const nlohmann::json& body);

struct CommitRequest {
    std::uint64_t chunks = 0, frames = 0;
    std::string sha256;  // 64 lower-case hex
};
Result<CommitRequest> parse_commit(const nlohmann::json& body);

struct HashesRequest {
    std::optional<std::string> target;   // "disk": a target ...
    std::optional<std::uint64_t> index;  // ... or an index in the store's disk order
    std::uint64_t block_size = 0, first = 0, count = 0;
};
Result<HashesRequest> parse_hashes(const nlohmann::json& body);

Result<bool> parse_failover(const nlohmann::json& body);  // the "planned" flag

struct ReverseOffer {
    Announcement vm;
    std::string token, time;
};
Result<ReverseOffer> parse_reverse(const nlohmann::json& body);

bool same_disks(const std::vector<StoreDisk>& a, const std::vector<StoreDisk>& b);
std::string describe_disks(const std::vector<StoreDisk>& disks);  // "vda 1073741824, vdb ..."

nlohmann::json point_json(const RecoveryPoint& point);
// VmReplicaState.
nlohmann::json state_json(const ReplicaStore& store);

net::HttpResponse json_response(int status, const nlohmann::json& body);
// {"error", "kind"} with the kind's status; `extra` fields merged in.
net::HttpResponse error_response(const Error& error, const nlohmann::json& extra = {});
net::HttpResponse error_response(int status, const std::string& message);

}  // namespace vmshadow::replica::routes
