// SPDX-License-Identifier: MIT
#pragma once
// HttpServer: an HTTP/1.1 server on TLS-over-TCP listeners and unix-socket listeners, with a
// fixed number of threads, for the daemon's REST API (and the replica receiver later).
//
// This module is: listening (an address and port — port 0 picks a free one — with the host's
// certificate and key, TLS 1.2 or newer only, optionally requiring a client certificate
// signed by a given CA; or a unix socket created with the given mode, any stale socket file
// replaced), reading requests with bounded sizes (headers, body: a body over the limit is
// answered 413 without reading it; headers over the limit 431; a malformed request 400 —
// each of these then closes the connection; a connection idle past the timeout is closed),
// calling the handler (an exception from it is a 500), writing the response, keep-alive. At most
// `max_connections` connections are open; more wait in the kernel's backlog.
// Why Boost.Beast (docs/ARCHITECTURE.md): Debian 12's cpp-httplib (0.11) cannot listen on a
// unix socket, and the replica needs client certificates and bodies streamed in pieces; Beast
// gives HTTP parsing over any Asio stream (TCP, TLS, local) with explicit body limits.
// It is not: routing or authentication (the handler's), or an HTTP/2 server.
//
// Thread-safety: the handler is called from `threads` threads at once. stop() may be called
// from any thread (not from the handler); the destructor stops.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "net/http.h"

namespace vmshadow::net {

struct TlsListener {
    std::string address = "127.0.0.1";       // an IPv4 or IPv6 literal
    std::uint16_t port = 0;                  // 0: any free port (see HttpServer::tls_port)
    std::filesystem::path certificate_file;  // PEM
    std::filesystem::path key_file;          // PEM
    // When set, a client must present a certificate this CA signed (the replica's peers).
    std::optional<std::filesystem::path> client_ca_file;
};

struct UnixListener {
    std::filesystem::path path;
    mode_t mode = 0600;  // root only
};

struct HttpServerOptions {
    std::vector<TlsListener> tls;
    std::vector<UnixListener> unix_sockets;
    unsigned threads = 4;
    std::size_t max_connections = 256;
    std::size_t max_header_bytes = 16 * 1024;
    std::size_t max_body_bytes = 1024 * 1024;
    std::chrono::seconds idle_timeout{30};
    // One line per event worth an operator's eye: a client refused for its certificate
    // (untrusted, expired, none) on a listener with client_ca_file. Unset: not logged.
    // Called from the server's threads.
    std::function<void(std::string_view line)> log;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
  public:
    // Binds every listener (all or none: a failure closes what was opened and names the
    // listener) and starts serving.
    static Result<std::unique_ptr<HttpServer>> start(const HttpServerOptions& options,
                                                     HttpHandler handler);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // The port the i-th TLS listener is bound to.
    std::uint16_t tls_port(std::size_t index = 0) const;
    // Stops accepting, closes connections once their current response is written (at most
    // a few seconds), joins the threads, removes the unix socket files.
    void stop();

    struct Impl;

  private:
    explicit HttpServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::net
