// SPDX-License-Identifier: MIT
#pragma once
// What `vmshadow replica status|points` print from the API's JSON (GET /replicas,
// GET /replicas/{vm}/points), and the parsing of `--interval`: pure functions, tested on
// fixtures without a daemon. As in daemon_views.h, a field that is missing or of another type
// prints as "-" and every string goes through the table's printable cells.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace vmshadow::cli {

// The replication frequencies Hyper-V Replica offers, as typed: "30s", "5m", "15m" → 30,
// 300, 900 seconds; nullopt for anything else ("300", "5min", "1h").
std::optional<std::int64_t> parse_replica_interval(std::string_view text);

// GET /replicas → VM ROLE PEER STATE LAST-CYCLE RPO AVG/MAX-CYCLE SENT MISSED, then one line
// per replica whose state has a reason or whose last cycle failed ("web1: warning: ...").
// "No replication is configured on this host." for an empty list.
std::string replica_table(const nlohmann::json& replicas);
// GET /replicas/{vm}/points → SEQ TIME CONSISTENCY TOKEN, oldest first as the API lists them.
std::string replica_points_table(const nlohmann::json& points);

// The entry of `vm` in a GET /replicas answer (the whole answer's shape kept:
// {"replicas": [entry...]}, both roles when the host has both); nullopt when it has none.
std::optional<nlohmann::json> replicas_of(const nlohmann::json& replicas, std::string_view vm);

}  // namespace vmshadow::cli
