// SPDX-License-Identifier: MIT
#pragma once
// The command line as a client of vmshadowd (`status`, `job`, `task`, `token`): one request
// to the daemon's REST API (/api/v1) and its JSON answer, or an Error carrying the kind the
// API named, so the exit code is the one the README's table gives for that kind.
//
// Where the daemon is: `--daemon URL` / $VMSHADOW_DAEMON, default the local socket
// (unix:/var/lib/vmshadow/api.sock: root's, who needs no token). $VMSHADOW_TOKEN
// ("NAME:SECRET"), when set, is sent as a bearer token. An https:// URL reaches a remote
// daemon: it needs the token, and pins the daemon's
// self-signed certificate by `--fingerprint` / $VMSHADOW_FINGERPRINT (SHA-256, as vmshadowd
// prints it at start); without a pin the system's CAs verify it. Plain http:// is refused:
// the token would cross the network in the clear.
//
// This module is: endpoint and option checks, the request, mapping the answer (the API's
// {"error", "kind"} or a bare HTTP status) to an Error, the "vmshadowd is not running"
// message, and following a task's log until it ends.
// It is not: what the commands print (daemon_views.h) or HTTP itself (net/http_client.h).
//
// Thread-safety: free functions; each call opens its own connection.

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "cli/app.h"
#include "common/error.h"

namespace vmshadow::cli {

inline constexpr const char* kDefaultDaemonUrl = "unix:/var/lib/vmshadow/api.sock";
inline constexpr const char* kApiPrefix = "/api/v1";

// How to reach the daemon: checked by daemon_connection().
struct DaemonConnection {
    std::string url = kDefaultDaemonUrl;
    std::string fingerprint;  // https: the pinned SHA-256 of the daemon's certificate
    std::string token;        // "NAME:SECRET" ($VMSHADOW_TOKEN); "" = none
    std::chrono::milliseconds timeout{30000};
};

// The connection the global options and $VMSHADOW_TOKEN describe; invalid_argument for a
// URL that is not unix:PATH or https://HOST:PORT, or a fingerprint given for a unix socket.
Result<DaemonConnection> daemon_connection(const GlobalOptions& global);
Result<DaemonConnection> check_daemon_connection(DaemonConnection connection);

// `METHOD /api/v1<target>` with an optional JSON body; the answer's JSON when the status is
// 2xx, else api_error(). An unreachable daemon is ErrorKind::unavailable with a message
// saying how to start it.
Result<nlohmann::json> daemon_call(const DaemonConnection& connection, std::string_view method,
                                   std::string_view target,
                                   const std::optional<nlohmann::json>& body = std::nullopt);

// The Error an answer with a non-2xx status stands for: the kind and message of the API's
// {"error", "kind"} body, else a kind that fits the status (401/403 → permission, 404 →
// not_found, 409 → conflict, 503 → unavailable, ...).
Error api_error(int status, std::string_view body);

// The message for a local socket nobody answers on (kind unavailable).
Error daemon_not_running(const std::string& socket_path, bool socket_exists);

// `text` as one path segment or query value: every byte but A-Z a-z 0-9 - _ . ~ as %XX.
std::string percent_encode(std::string_view text);

// "/tasks?state=failed&job=nightly&limit=20": a query string of percent-encoded values
// (empty values left out).
std::string with_query(std::string target,
                       const std::vector<std::pair<std::string, std::string>>& params);

// Prints a task's log from line `start` (each line through `print`), polling every
// `interval` until the task has ended and every line is printed. Ctrl-C stops following
// (ErrorKind::cancelled saying the task goes on); the task itself is not touched.
Status follow_task_log(const DaemonConnection& connection, std::int64_t task, std::int64_t start,
                       bool follow, const CancelToken& cancel,
                       const std::function<void(const nlohmann::json& line)>& print,
                       std::chrono::milliseconds interval = std::chrono::milliseconds(500));

// What a command that started a task on the daemon does with the answer ({"task": ID}):
// prints the id (with --json, the answer); with `wait`, prints the id, follows the task's log
// to its end, prints the ended task (--json) or "task ID ok", and returns the task's result
// (task_failure) so the exit code is its error kind's. `what` names the request in the error
// for an answer without a task id ("run job nightly").
Status report_started_task(const GlobalOptions& global, const DaemonConnection& connection,
                           const nlohmann::json& started, std::string_view what, bool wait);

// The Error a task that ended without success stands for (its error_kind, else cancelled
// for cancelled/interrupted tasks and internal otherwise); nullopt for a task that is ok or
// has not ended.
std::optional<Error> task_failure(const nlohmann::json& task);

}  // namespace vmshadow::cli

namespace vmshadow::cli {

// A job id or token name as the daemon takes it ([a-z0-9][a-z0-9_-]{0,62}), checked at parse
// time (exit 2) so a typo is not a round trip to the daemon.
std::string daemon_name_problem(std::string_view name);
CLI::Option* add_daemon_name_option(CLI::App& app, const std::string& name, std::string& value,
                                    const std::string& help);

// The largest task id the commands take (the daemon's ids are positive 63-bit numbers).
inline constexpr long long kMaxTaskId = 1'000'000'000'000'000LL;

}  // namespace vmshadow::cli
