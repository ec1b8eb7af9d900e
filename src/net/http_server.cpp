// SPDX-License-Identifier: MIT
#include "net/http_server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include "common/os_error.h"
#include "net/tls_util.h"

namespace vmshadow::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using local = asio::local::stream_protocol;
using UnixStream = beast::basic_stream<local>;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using Parser = http::request_parser<http::string_body>;

namespace {

// How long a connection that is being closed gets to take our last response and its own
// unread bytes (a 413 leaves the body it sent in our receive buffer: closing at once would
// reset the connection and the client could lose the 413).
constexpr auto linger_time = std::chrono::seconds(1);
constexpr std::size_t linger_bytes = 1024 * 1024;
constexpr auto handshake_time = std::chrono::seconds(10);
// How long stop() waits for connections busy with a request before it stops the threads.
constexpr auto stop_grace = std::chrono::seconds(5);

// One open connection as stop() sees it. Touched only on the connection's strand.
struct Connection {
    asio::any_io_executor executor;
    bool idle = true;             // waiting for a handshake or the next request
    std::function<void()> close;  // closes the socket; empty once the session ended
};

// Empties Connection::close when the session's stream goes, however the session ends.
struct CloseReset {
    Connection& connection;
    ~CloseReset() { connection.close = nullptr; }
};

struct TcpListenerState {
    TlsListener spec;
    std::unique_ptr<ssl::context> context;
    std::unique_ptr<tcp::acceptor> acceptor;
    std::uint16_t port = 0;
};

struct UnixListenerState {
    UnixListener spec;
    std::unique_ptr<local::acceptor> acceptor;
    dev_t device = 0;
    ino_t inode = 0;
};

std::string endpoint_text(const tcp::endpoint& endpoint) {
    auto address = endpoint.address();
    std::string host = address.to_string();
    if (address.is_v6()) host = "[" + host + "]";
    return host + ":" + std::to_string(endpoint.port());
}

// Beast 1.74 speaks boost::string_view.
std::string_view std_view(beast::string_view text) {
    return {text.data(), text.size()};
}
beast::string_view beast_view(std::string_view text) {
    return {text.data(), text.size()};
}

std::string lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

HttpResponse plain_error(int status, std::string_view message) {
    HttpResponse response;
    response.status = status;
    response.body = std::string("{\"error\": \"") + std::string(message) +
                    "\", \"kind\": \"invalid_argument\"}";
    return response;
}

// The request as the handler sees it, or nullopt when its target is not an origin-form path
// with valid percent-encoding.
std::optional<HttpRequest> to_request(http::request<http::string_body>& message, const Peer& peer) {
    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    if (request.target.empty() || request.target.front() != '/') return std::nullopt;
    std::string_view target = request.target;
    auto question = target.find('?');
    auto path = percent_decode(target.substr(0, question), false);
    if (!path) return std::nullopt;
    request.path = std::move(*path);
    if (question != std::string_view::npos) {
        auto query = parse_query(target.substr(question + 1));
        if (!query) return std::nullopt;
        request.query = std::move(*query);
    }
    for (const auto& field : message) {
        std::string name = lower(std_view(field.name_string()));
        auto [it, inserted] = request.headers.emplace(name, std::string(field.value()));
        if (!inserted) {  // RFC 9110 5.3: repeated fields combine into one list
            it->second += ", ";
            it->second += std::string(field.value());
        }
    }
    request.body = std::move(message.body());
    request.peer = peer;
    return request;
}

// RFC 9110 token characters for a name; no line breaks or NUL in a value.
bool valid_header(std::string_view name, std::string_view value) {
    if (name.empty()) return false;
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f || std::strchr("\"(),/:;<=>?@[\\]{}", c) != nullptr)
            return false;
    }
    return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

http::response<http::string_body> build_message(const HttpResponse& response, bool keep_alive,
                                                bool head) {
    http::response<http::string_body> message;
    message.version(11);
    message.result(static_cast<unsigned>(response.status));
    if (auto reason = status_reason(response.status); !reason.empty())
        message.reason(beast_view(reason));
    if (!response.content_type.empty())
        message.set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) {
        if (!valid_header(name, value)) throw std::invalid_argument("bad header");
        message.insert(name, value);
    }
    message.keep_alive(keep_alive);
    int status = response.status;
    if (status / 100 == 1 || status == 204 || status == 304) return message;  // no body allowed
    if (head) {  // the length the body would have, none of its bytes
        message.content_length(response.body.size());
        return message;
    }
    message.body() = response.body;
    message.prepare_payload();
    return message;
}

// The response on the wire; a handler's response Beast cannot write (a status outside
// 100-999, a header name it refuses) becomes a 500 rather than a dropped connection.
http::response<http::string_body> to_message(const HttpResponse& response, bool keep_alive,
                                             bool head = false) {
    if (response.status >= 100 && response.status <= 999) {
        try {
            return build_message(response, keep_alive, head);
        } catch (const std::exception&) {
        }
    }
    HttpResponse internal;
    internal.status = 500;
    internal.body =
        R"({"error": "the handler's response could not be written", "kind": "internal"})";
    return build_message(internal, keep_alive, head);
}

template <class Stream>
auto& lowest(Stream& stream) {
    return beast::get_lowest_layer(stream);
}

}  // namespace

struct HttpServer::Impl {
    HttpServerOptions options;
    HttpHandler handler;
    std::mutex mutex;
    std::condition_variable idle_cv;
    std::size_t active = 0;  // open connections (guarded by mutex)
    std::uint64_t next_id = 0;
    std::map<std::uint64_t, std::shared_ptr<Connection>> connections;
    std::atomic<bool> stopping{false};
    std::mutex stop_mutex;
    bool stopped = false;

    // Declared after what sessions use (destroyed before it: pending sessions die with it).
    asio::io_context io;
    std::vector<std::unique_ptr<TcpListenerState>> tcp_listeners;
    std::vector<std::unique_ptr<UnixListenerState>> unix_listeners;
    std::vector<std::thread> threads;

    Impl(const HttpServerOptions& o, HttpHandler h)
        : options(o), handler(std::move(h)), io(static_cast<int>(std::max(1u, o.threads))) {}

    Status open_tls(TlsListener spec);
    Status open_unix(UnixListener spec);
    void start_threads();
    void shutdown();

    template <class Acceptor>
    asio::awaitable<void> accept_loop(Acceptor& acceptor, TcpListenerState* tls,
                                      std::string unix_path);
    asio::awaitable<void> tls_session(tcp::socket socket, ssl::context& context,
                                      std::shared_ptr<Connection> connection);
    void log_refused_client(SSL* ssl, const std::string& listener, const Peer& peer,
                            const detail::VerifyNote& note, const boost::system::error_code& ec);
    asio::awaitable<void> unix_session(local::socket socket, std::string path,
                                       std::shared_ptr<Connection> connection);
    template <class Stream>
    asio::awaitable<void> serve(Stream& stream, const Peer& peer, Connection& connection);
    template <class Stream>
    asio::awaitable<void> respond_and_close(Stream& stream, int status, std::string_view message);
    template <class Stream>
    asio::awaitable<void> close_stream(Stream& stream, bool linger);

    std::shared_ptr<Connection> register_connection(asio::any_io_executor executor,
                                                    std::uint64_t& id);
    void unregister_connection(std::uint64_t id);
    HttpResponse call_handler(const HttpRequest& request);
};

// ---- listeners ---------------------------------------------------------------------------

Status HttpServer::Impl::open_tls(TlsListener spec) {
    std::string name = "TLS listener " + spec.address + ":" + std::to_string(spec.port);
    auto state = std::make_unique<TcpListenerState>();
    state->context = std::make_unique<ssl::context>(ssl::context::tls_server);
    SSL_CTX* ctx = state->context->native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, spec.certificate_file.c_str()) != 1)
        return fail(ErrorKind::invalid_argument, name + ": certificate " +
                                                     spec.certificate_file.string() + ": " +
                                                     detail::openssl_error());
    if (SSL_CTX_use_PrivateKey_file(ctx, spec.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        return fail(ErrorKind::invalid_argument,
                    name + ": key " + spec.key_file.string() + ": " + detail::openssl_error());
    if (spec.client_ca_file) {
        const char* ca = spec.client_ca_file->c_str();
        STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca);
        if (names == nullptr || SSL_CTX_load_verify_locations(ctx, ca, nullptr) != 1) {
            if (names != nullptr) sk_X509_NAME_pop_free(names, X509_NAME_free);
            return fail(ErrorKind::invalid_argument, name + ": client CA " +
                                                         spec.client_ca_file->string() + ": " +
                                                         detail::openssl_error());
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           detail::note_verify_result);
        // Session resumption with client verification needs an id context.
        static const unsigned char id[] = "vmshadow";
        SSL_CTX_set_session_id_context(ctx, id, sizeof id - 1);
    }

    boost::system::error_code ec;
    auto address = asio::ip::make_address(spec.address, ec);
    if (ec) return fail(ErrorKind::invalid_argument, name + ": not an IP address");
    tcp::endpoint endpoint(address, spec.port);
    state->acceptor = std::make_unique<tcp::acceptor>(asio::make_strand(io));
    auto& acceptor = *state->acceptor;
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec && address.is_v6()) acceptor.set_option(asio::ip::v6_only(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail(os_error(name, ec.value()));
    state->port = acceptor.local_endpoint().port();
    state->spec = std::move(spec);
    tcp_listeners.push_back(std::move(state));
    return {};
}

namespace {

// A socket file at `path` that nothing accepts on (the daemon died): safe to replace.
// Something else there, or a live server, is the caller's to sort out.
Status check_stale_socket(const std::filesystem::path& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return {};
        return fail(os_error("stat " + path.string(), errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return fail(ErrorKind::conflict, path.string() + " exists and is not a socket: remove it");
    // Non-blocking: a live server with a full backlog answers EAGAIN instead of hanging us.
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(os_error("socket", errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.string().size());
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int err = errno;
    ::close(fd);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS)
        return fail(ErrorKind::conflict,
                    path.string() + ": another server is listening on it (a running vmshadowd?)");
    return {};
}

}  // namespace

Status HttpServer::Impl::open_unix(UnixListener spec) {
    const auto& path = spec.path;
    std::string name = "unix listener " + path.string();
    sockaddr_un probe_addr{};
    if (path.empty() || path.string().size() >= sizeof probe_addr.sun_path)
        return fail(ErrorKind::invalid_argument, name + ": path empty or too long for a socket");
    if (auto st = check_stale_socket(path); !st) return fail(st.error().with_context(name));

    // Bound first inside a private folder (0700) beside the target, given its mode there, then
    // renamed into place: no moment where the socket is reachable with a wider mode, and the
    // process umask (shared by every thread) is left alone. The rename replaces a stale file.
    auto parent = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    std::string temp_template = (parent / ".vmshadow-sock.XXXXXX").string();
    if (::mkdtemp(temp_template.data()) == nullptr)
        return fail(os_error(name + ": make a folder in " + parent.string(), errno));
    std::filesystem::path temp_dir = temp_template;
    std::filesystem::path temp_path = temp_dir / "s";
    struct Cleanup {
        std::filesystem::path dir;
        ~Cleanup() {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } cleanup{temp_dir};
    if (temp_path.string().size() >= sizeof probe_addr.sun_path)
        return fail(ErrorKind::invalid_argument, name + ": path too long for a socket");

    auto state = std::make_unique<UnixListenerState>();
    state->acceptor = std::make_unique<local::acceptor>(asio::make_strand(io));
    auto& acceptor = *state->acceptor;
    boost::system::error_code ec;
    acceptor.open(local(), ec);
    if (!ec) acceptor.bind(local::endpoint(temp_path.string()), ec);
    if (ec) return fail(os_error(name + ": bind", ec.value()));
    if (::chmod(temp_path.c_str(), spec.mode & 07777) != 0)
        return fail(os_error(name + ": chmod", errno));
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail(os_error(name + ": listen", ec.value()));
    if (::rename(temp_path.c_str(), path.c_str()) != 0)
        return fail(os_error(name + ": rename into place", errno));
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        state->device = st.st_dev;
        state->inode = st.st_ino;
    }
    state->spec = std::move(spec);
    unix_listeners.push_back(std::move(state));
    return {};
}

// ---- connections ---------------------------------------------------------------------------

std::shared_ptr<Connection> HttpServer::Impl::register_connection(asio::any_io_executor executor,
                                                                  std::uint64_t& id) {
    std::lock_guard lock(mutex);
    if (stopping) return nullptr;
    auto connection = std::make_shared<Connection>();
    connection->executor = std::move(executor);
    id = next_id++;
    connections.emplace(id, connection);
    ++active;
    return connection;
}

void HttpServer::Impl::unregister_connection(std::uint64_t id) {
    std::lock_guard lock(mutex);
    connections.erase(id);
    --active;
    idle_cv.notify_all();
}

template <class Acceptor>
asio::awaitable<void> HttpServer::Impl::accept_loop(Acceptor& acceptor, TcpListenerState* tls,
                                                    std::string unix_path) {
    asio::steady_timer wait(acceptor.get_executor());
    boost::system::error_code ec;
    while (!stopping) {
        bool full;
        {
            std::lock_guard lock(mutex);
            full = active >= std::max<std::size_t>(1, options.max_connections);
        }
        if (full) {  // leave new connections in the kernel's backlog until one closes
            wait.expires_after(std::chrono::milliseconds(20));
            co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            continue;
        }
        auto socket = co_await acceptor.async_accept(asio::make_strand(io),
                                                     asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (stopping || ec == asio::error::operation_aborted) break;
            // Out of descriptors or memory: back off instead of spinning.
            wait.expires_after(std::chrono::milliseconds(50));
            co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
            continue;
        }
        std::uint64_t id = 0;
        auto executor = asio::any_io_executor(socket.get_executor());
        auto connection = register_connection(executor, id);
        if (!connection) break;
        auto done = [this, id](std::exception_ptr) { unregister_connection(id); };
        if constexpr (std::is_same_v<Acceptor, tcp::acceptor>) {
            asio::co_spawn(executor,
                           tls_session(tcp::socket(std::move(socket)), *tls->context, connection),
                           done);
        } else {
            asio::co_spawn(executor,
                           unix_session(local::socket(std::move(socket)), unix_path, connection),
                           done);
        }
    }
}

asio::awaitable<void> HttpServer::Impl::tls_session(tcp::socket socket, ssl::context& context,
                                                    std::shared_ptr<Connection> connection) {
    boost::system::error_code ec;
    Peer peer;
    auto remote = socket.remote_endpoint(ec);
    if (!ec) peer.address = endpoint_text(remote);
    auto here = socket.local_endpoint(ec);
    std::string listener = ec ? std::string("?") : endpoint_text(here);
    TlsStream stream(std::move(socket), context);
    detail::VerifyNote note;
    detail::attach_verify_note(stream.native_handle(), &note);
    connection->close = [&stream] { lowest(stream).close(); };
    CloseReset reset{*connection};
    // stop() may have looked at this connection before `close` was set: it set `stopping`
    // first, so this sees it.
    if (stopping) co_return;
    // A handshake is a few round trips: one that stalls holds a connection slot, so it gets
    // less time than an idle keep-alive connection.
    lowest(stream).expires_after(
        std::min<std::chrono::steady_clock::duration>(options.idle_timeout, handshake_time));
    co_await stream.async_handshake(ssl::stream_base::server,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        log_refused_client(stream.native_handle(), listener, peer, note, ec);
        co_return;
    }
    if (!stopping) {
        SSL* ssl = stream.native_handle();
        if (X509* cert = SSL_get1_peer_certificate(ssl)) {
            if (SSL_get_verify_result(ssl) == X509_V_OK) {
                peer.client_certificate_sha256 = detail::sha256_fingerprint(cert);
                peer.client_certificate_subject = detail::subject_text(cert);
            }
            X509_free(cert);
        }
        co_await serve(stream, peer, *connection);
    }
}

// A client refused for its certificate is someone to tell the operator about (a peer with
// the wrong CA or an expired certificate); other failed handshakes (scanners, old TLS) are not.
void HttpServer::Impl::log_refused_client(SSL* ssl, const std::string& listener, const Peer& peer,
                                          const detail::VerifyNote& note,
                                          const boost::system::error_code& ec) {
    if (!options.log || SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE ||
        ec.category() != asio::error::get_ssl_category())
        return;
    std::string why;
    if (note.failed) {
        why = "certificate " + note.subject + ": " + note.reason;
    } else if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
               SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        why = "it presented no client certificate";
    } else {
        return;
    }
    options.log("TLS listener " + listener + ": client " + peer.address + " refused: " + why);
}

asio::awaitable<void> HttpServer::Impl::unix_session(local::socket socket, std::string path,
                                                     std::shared_ptr<Connection> connection) {
    Peer peer;
    peer.unix_socket = true;
    peer.address = std::move(path);
    ucred cred{};
    socklen_t length = sizeof cred;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &length) == 0)
        peer.uid = cred.uid;
    UnixStream stream(std::move(socket));
    connection->close = [&stream] { stream.close(); };
    CloseReset reset{*connection};
    co_await serve(stream, peer, *connection);
}

HttpResponse HttpServer::Impl::call_handler(const HttpRequest& request) {
    try {
        return handler(request);
    } catch (...) {
        // A bug in a handler costs its request, never the daemon.
        HttpResponse response;
        response.status = 500;
        response.body =
            R"({"error": "internal error while handling the request", "kind": "internal"})";
        return response;
    }
}

namespace {

bool is_parse_error(const boost::system::error_code& ec) {
    return ec.category() == http::make_error_code(http::error::bad_target).category() &&
           ec != http::error::end_of_stream && ec != http::error::partial_message;
}

}  // namespace

template <class Stream>
asio::awaitable<void> HttpServer::Impl::serve(Stream& stream, const Peer& peer,
                                              Connection& connection) {
    boost::system::error_code ec;
    beast::flat_buffer buffer;
    for (;;) {
        Parser parser;
        parser.header_limit(static_cast<std::uint32_t>(
            std::min<std::size_t>(options.max_header_bytes, UINT32_MAX)));
        parser.body_limit(options.max_body_bytes);
        connection.idle = true;
        if (stopping) break;
        lowest(stream).expires_after(options.idle_timeout);
        co_await http::async_read_header(stream, buffer, parser,
                                         asio::redirect_error(asio::use_awaitable, ec));
        connection.idle = false;
        if (ec == http::error::header_limit) {
            co_await respond_and_close(stream, 431, "request header too large");
            co_return;
        }
        if (ec == http::error::body_limit) {  // Content-Length over the limit: body unread
            co_await respond_and_close(stream, 413, "request body too large");
            co_return;
        }
        if (ec) {
            if (is_parse_error(ec)) co_await respond_and_close(stream, 400, "malformed request");
            co_return;  // closed, reset or idle past the timeout: nobody to answer
        }
        // Beast 1.74 checks a Content-Length against the limit only in the header-only read
        // above (its eager body read skips it); say it here too, so nothing depends on that.
        if (parser.content_length() && *parser.content_length() > options.max_body_bytes) {
            co_await respond_and_close(stream, 413, "request body too large");
            co_return;
        }
        if (parser.get()[http::field::expect] == "100-continue" && !parser.is_done()) {
            http::response<http::empty_body> go_on{http::status::continue_, 11};
            co_await http::async_write(stream, go_on,
                                       asio::redirect_error(asio::use_awaitable, ec));
            if (ec) co_return;
        }
        lowest(stream).expires_after(options.idle_timeout);
        co_await http::async_read(stream, buffer, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::body_limit) {  // a chunked body grew past the limit
            co_await respond_and_close(stream, 413, "request body too large");
            co_return;
        }
        if (ec) {
            if (is_parse_error(ec)) co_await respond_and_close(stream, 400, "malformed request");
            co_return;
        }
        auto& message = parser.get();
        bool keep_alive = message.keep_alive();
        auto request = to_request(message, peer);
        HttpResponse response =
            request ? call_handler(*request) : plain_error(400, "malformed request target");
        keep_alive = keep_alive && !stopping;
        auto reply = to_message(response, keep_alive, message.method() == http::verb::head);
        lowest(stream).expires_after(options.idle_timeout);
        co_await http::async_write(stream, reply, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
        if (!keep_alive) break;
    }
    co_await close_stream(stream, false);
}

template <class Stream>
asio::awaitable<void> HttpServer::Impl::respond_and_close(Stream& stream, int status,
                                                          std::string_view message) {
    auto reply = to_message(plain_error(status, message), false);
    boost::system::error_code ec;
    lowest(stream).expires_after(std::min<std::chrono::steady_clock::duration>(
        options.idle_timeout, std::chrono::seconds(5)));
    co_await http::async_write(stream, reply, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) co_await close_stream(stream, true);
}

template <class Stream>
asio::awaitable<void> HttpServer::Impl::close_stream(Stream& stream, bool linger) {
    boost::system::error_code ec;
    constexpr bool tls = std::is_same_v<Stream, TlsStream>;
    if constexpr (!tls) lowest(stream).socket().shutdown(local::socket::shutdown_send, ec);
    lowest(stream).expires_after(linger_time);
    if (linger) {  // take (and drop) what the client still sends, a bounded while
        std::vector<char> scratch(16 * 1024);
        std::size_t taken = 0;
        while (taken < linger_bytes) {
            std::size_t n = co_await stream.async_read_some(
                asio::buffer(scratch), asio::redirect_error(asio::use_awaitable, ec));
            if (ec) break;
            taken += n;
        }
    }
    if constexpr (tls) {
        lowest(stream).expires_after(linger_time);
        co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    }
    lowest(stream).close();
}

// ---- lifecycle ---------------------------------------------------------------------------

void HttpServer::Impl::start_threads() {
    for (auto& l : tcp_listeners)
        asio::co_spawn(l->acceptor->get_executor(), accept_loop(*l->acceptor, l.get(), {}),
                       asio::detached);
    for (auto& l : unix_listeners)
        asio::co_spawn(l->acceptor->get_executor(),
                       accept_loop<local::acceptor>(*l->acceptor, nullptr, l->spec.path.string()),
                       asio::detached);
    unsigned count = std::max(1u, options.threads);
    for (unsigned i = 0; i < count; ++i) threads.emplace_back([this] { io.run(); });
}

void HttpServer::Impl::shutdown() {
    std::lock_guard stop_lock(stop_mutex);
    if (stopped) return;
    stopped = true;
    {
        std::lock_guard lock(mutex);
        stopping = true;
        for (auto& [id, connection] : connections) {
            asio::post(connection->executor, [connection] {
                if (connection->idle && connection->close) connection->close();
            });
        }
    }
    for (auto& l : tcp_listeners)
        asio::post(l->acceptor->get_executor(), [a = l->acceptor.get()] {
            boost::system::error_code ec;
            a->close(ec);
        });
    for (auto& l : unix_listeners)
        asio::post(l->acceptor->get_executor(), [a = l->acceptor.get()] {
            boost::system::error_code ec;
            a->close(ec);
        });
    {
        std::unique_lock lock(mutex);
        idle_cv.wait_for(lock, stop_grace, [this] { return active == 0; });
    }
    io.stop();
    for (auto& t : threads)
        if (t.joinable()) t.join();
    threads.clear();
    for (auto& l : unix_listeners) {
        // Only our own socket: a newer server may have replaced the file since.
        struct stat st {};
        if (::lstat(l->spec.path.c_str(), &st) == 0 && st.st_dev == l->device &&
            st.st_ino == l->inode)
            ::unlink(l->spec.path.c_str());
    }
}

// ---- HttpServer --------------------------------------------------------------------------

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerOptions& options,
                                                      HttpHandler handler) {
    auto impl = std::make_unique<Impl>(options, std::move(handler));
    for (const auto& spec : options.tls)
        if (auto st = impl->open_tls(spec); !st) return fail(st.error());
    for (const auto& spec : options.unix_sockets) {
        if (auto st = impl->open_unix(spec); !st) {
            impl->shutdown();  // removes the sockets made so far
            return fail(st.error());
        }
    }
    impl->start_threads();
    return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
    stop();
}

std::uint16_t HttpServer::tls_port(std::size_t index) const {
    return index < impl_->tcp_listeners.size() ? impl_->tcp_listeners[index]->port : 0;
}

void HttpServer::stop() {
    impl_->shutdown();
}

}  // namespace vmshadow::net
