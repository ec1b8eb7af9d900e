// SPDX-License-Identifier: MIT
#include "cli/daemon_client.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cli/daemon_views.h"
#include "cli/names.h"
#include "net/http_client.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

constexpr const char* kStartHint = "start it with `vmshadowd` or `systemctl start vmshadowd`";

// What a failed connection means to someone typing `vmshadow status`.
Error connection_error(const net::HttpEndpoint& endpoint, const DaemonConnection& c,
                       const Error& e) {
    if (endpoint.scheme == net::HttpEndpoint::Scheme::unix_socket) {
        const std::string path = endpoint.socket_path.string();
        if (e.kind() == ErrorKind::permission)
            return Error(ErrorKind::permission,
                         "cannot connect to vmshadowd at " + path +
                             ": permission denied (the socket is root's: run as root, or use "
                             "--daemon https://HOST:8470 with VMSHADOW_TOKEN)");
        if (e.kind() == ErrorKind::unavailable || e.kind() == ErrorKind::not_found) {
            std::error_code ec;
            return daemon_not_running(path, std::filesystem::exists(endpoint.socket_path, ec));
        }
        return Error(e.kind(), "vmshadowd at " + path + ": " + e.message());
    }
    // The client's message may name the URL already.
    std::string message = e.message().starts_with(c.url)
                              ? "vmshadowd at " + e.message()
                              : "vmshadowd at " + c.url + ": " + e.message();
    if (e.kind() == ErrorKind::permission && c.fingerprint.empty())
        message +=
            " (pin its certificate with --fingerprint or VMSHADOW_FINGERPRINT: vmshadowd "
            "prints it at start)";
    return Error(e.kind(), message);
}

// The two common failures on the local socket, said before any connect: no daemon (no socket
// file), and a user the socket's mode (root's) does not let in — which a connect would report
// as a refusal, as if the daemon were not running.
Status check_socket(const std::filesystem::path& socket) {
    if (::access(socket.c_str(), W_OK) == 0) return {};
    const int e = errno;
    if (e == ENOENT || e == ENOTDIR) return std::unexpected(daemon_not_running(socket, false));
    if (e == EACCES || e == EPERM)
        return fail(ErrorKind::permission,
                    "cannot connect to vmshadowd at " + printable(socket.string()) +
                        ": permission denied (the socket is root's: run as root, or use "
                        "--daemon https://HOST:8470 with VMSHADOW_TOKEN)");
    return {};  // the connect says what else is wrong
}

}  // namespace

std::string percent_encode(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += c;
        } else {
            out += '%';
            out += kHex[u >> 4];
            out += kHex[u & 15];
        }
    }
    return out;
}

Result<DaemonConnection> check_daemon_connection(DaemonConnection c) {
    auto endpoint = net::HttpEndpoint::parse(c.url);
    if (!endpoint)
        return fail(ErrorKind::invalid_argument, "--daemon: '" + printable(c.url) +
                                                     "' is not unix:PATH or https://HOST:PORT (" +
                                                     endpoint.error().message() + ")");
    if (endpoint->scheme == net::HttpEndpoint::Scheme::http)
        return fail(ErrorKind::invalid_argument,
                    "--daemon: '" + printable(c.url) +
                        "' is plain HTTP: vmshadowd's API is HTTPS (https://HOST:8470) or its "
                        "local socket (unix:PATH)");
    if (endpoint->scheme == net::HttpEndpoint::Scheme::unix_socket && !c.fingerprint.empty())
        return fail(ErrorKind::invalid_argument,
                    "--fingerprint: pins the certificate of an https:// daemon; the local socket "
                    "'" +
                        printable(c.url) + "' has none");
    return c;
}

Result<DaemonConnection> daemon_connection(const GlobalOptions& global) {
    DaemonConnection c;
    if (!global.daemon_url.empty()) c.url = global.daemon_url;
    c.fingerprint = global.daemon_fingerprint;
    if (const char* token = std::getenv("VMSHADOW_TOKEN")) c.token = token;
    return check_daemon_connection(std::move(c));
}

Error daemon_not_running(const std::string& socket_path, bool socket_exists) {
    if (!socket_exists)
        return Error(ErrorKind::unavailable, "vmshadowd is not running (no socket at " +
                                                 printable(socket_path) + "): " + kStartHint);
    return Error(ErrorKind::unavailable, "vmshadowd is not running (nothing answers on " +
                                             printable(socket_path) + "): " + kStartHint);
}

Error api_error(int status, std::string_view body) {
    json j = json::parse(body, nullptr, false);
    ErrorKind kind = net::error_kind_for_status(status);
    std::string message;
    if (j.is_object() && j.contains("error") && j["error"].is_string()) {
        message = printable(j["error"].get<std::string>());
        if (auto it = j.find("kind"); it != j.end() && it->is_string())
            if (auto k = parse_kind_name(it->get<std::string>())) kind = *k;
    } else {
        std::string reason(net::status_reason(status));
        message = "vmshadowd answered HTTP " + std::to_string(status) +
                  (reason.empty() ? "" : " (" + reason + ")");
        if (!body.empty()) message += ": " + printable(body.substr(0, 200));
    }
    if (status == 401)
        message += " (set VMSHADOW_TOKEN to a token from `vmshadow token create`, NAME:SECRET)";
    return Error(kind, message);
}

std::string with_query(std::string target,
                       const std::vector<std::pair<std::string, std::string>>& params) {
    char sep = target.find('?') == std::string::npos ? '?' : '&';
    for (const auto& [key, value] : params) {
        if (value.empty()) continue;
        target += sep + percent_encode(key) + "=" + percent_encode(value);
        sep = '&';
    }
    return target;
}

Result<json> daemon_call(const DaemonConnection& c, std::string_view method,
                         std::string_view target, const std::optional<json>& body) {
    auto endpoint = net::HttpEndpoint::parse(c.url);
    if (!endpoint) return std::unexpected(endpoint.error());
    const bool unix_socket = endpoint->scheme == net::HttpEndpoint::Scheme::unix_socket;
    if (unix_socket)
        if (auto st = check_socket(endpoint->socket_path); !st) return std::unexpected(st.error());
    if (!c.fingerprint.empty()) endpoint->pinned_sha256 = c.fingerprint;
    net::HttpClientRequest request;
    request.method = std::string(method);
    request.target = std::string(kApiPrefix) + std::string(target);
    request.timeout = c.timeout;
    if (body) request.body = body->dump();
    // Over the socket root needs no token (the daemon checks the peer's uid), but anyone
    // else the socket's mode lets in does; the socket is local, so the token stays here.
    if (!c.token.empty()) request.headers.emplace_back("Authorization", "Bearer " + c.token);
    auto response = net::http_request(*endpoint, request);
    if (!response) return std::unexpected(connection_error(*endpoint, c, response.error()));
    if (response->status < 200 || response->status > 299)
        return std::unexpected(api_error(response->status, response->body));
    json j = json::parse(response->body, nullptr, false);
    if (j.is_discarded())
        return fail(ErrorKind::io, "vmshadowd's answer to " + std::string(method) + " " +
                                       request.target + " is not JSON");
    return j;
}

Status follow_task_log(const DaemonConnection& c, std::int64_t task, std::int64_t start,
                       bool follow, const CancelToken& cancel,
                       const std::function<void(const json&)>& print,
                       std::chrono::milliseconds interval) {
    const std::string id = std::to_string(task);
    std::int64_t next = start;
    auto stopped = [&]() -> Status {
        return fail(ErrorKind::cancelled, "stopped following task " + id +
                                              ": it goes on (`vmshadow task abort " + id +
                                              "` stops it)");
    };
    for (;;) {
        auto page = daemon_call(
            c, "GET", with_query("/tasks/" + id + "/log", {{"start", std::to_string(next)}}));
        if (!page) return std::unexpected(page.error());
        const json* lines =
            page->is_object() && page->contains("lines") ? &(*page)["lines"] : nullptr;
        const bool any = lines && lines->is_array() && !lines->empty();
        if (any)
            for (const auto& line : *lines) print(line);
        const std::int64_t before = next;
        if (auto n = int_field(*page, "next")) next = std::max(next, *n);
        const json* done_field =
            page->is_object() && page->contains("done") ? &(*page)["done"] : nullptr;
        const bool done = done_field && done_field->is_boolean() && done_field->get<bool>();
        // A page at a time until caught up (a page that does not move `next` on is the last).
        if (any && next > before) {
            if (cancel.requested()) return stopped();
            continue;
        }
        if (!follow || done) return {};
        if (cancel.sleep_for(interval)) return stopped();
    }
}

std::optional<Error> task_failure(const json& task) {
    const std::string state = text_field(task, "state");
    if (state == "ok" || state == "queued" || state == "running" || state.empty())
        return std::nullopt;
    ErrorKind kind = state == "failed" ? ErrorKind::internal : ErrorKind::cancelled;
    if (auto k = parse_kind_name(text_field(task, "error_kind"))) kind = *k;
    const std::string why = text_field(task, "error");
    const std::string id = text_field(task, "id");
    return Error(kind, "task " + printable(id.empty() ? "?" : id) + " " + printable(state) +
                           (why.empty() ? "" : ": " + printable(why)));
}

}  // namespace vmshadow::cli

namespace vmshadow::cli {

std::string daemon_name_problem(std::string_view name) {
    auto ok = [](char c, bool first) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               (!first && (c == '_' || c == '-'));
    };
    bool good = !name.empty() && name.size() <= 63;
    for (std::size_t i = 0; good && i < name.size(); ++i) good = ok(name[i], i == 0);
    if (good) return {};
    return "must be 1-63 characters of a-z 0-9 _ -, starting with a letter or digit, got '" +
           printable(name.substr(0, 64)) + "'";
}

CLI::Option* add_daemon_name_option(CLI::App& app, const std::string& name, std::string& value,
                                    const std::string& help) {
    auto check = [](std::string& text) { return daemon_name_problem(text); };
    return app.add_option(name, value, help)
        ->type_name("NAME")
        ->check(CLI::Validator(check, "", "vmshadow-daemon-name"));
}

Status report_started_task(const GlobalOptions& global, const DaemonConnection& c,
                           const json& started, std::string_view what, bool wait) {
    auto task = int_field(started, "task");
    if (!task)
        return fail(ErrorKind::io,
                    "vmshadowd's answer to " + std::string(what) + " has no task id");
    if (!wait) {
        std::cout << (global.json ? started.dump() : std::to_string(*task)) << std::endl;
        return {};
    }
    if (!global.json) std::cout << *task << std::endl;
    auto follow = follow_task_log(c, *task, 1, true, global.task->cancel(), [&](const json& line) {
        if (!global.json) std::cout << log_line_text(line) << std::endl;
    });
    if (!follow) return follow;
    auto ended = daemon_call(c, "GET", "/tasks/" + std::to_string(*task));
    if (!ended) return std::unexpected(ended.error());
    if (global.json) std::cout << ended->dump() << std::endl;
    if (auto failure = task_failure(*ended)) return std::unexpected(*failure);
    if (!global.json) std::cout << "task " << *task << " ok" << std::endl;
    return {};
}

}  // namespace vmshadow::cli
