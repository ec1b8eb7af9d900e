// SPDX-License-Identifier: MIT
#include "net/http_client.h"

#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

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
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t max_response_header = 64 * 1024;

std::string_view std_view(beast::string_view text) {
    return {text.data(), text.size()};
}
beast::string_view beast_view(std::string_view text) {
    return {text.data(), text.size()};
}

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
    return true;
}

bool has_control_or_space(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
    });
}

// base_path + target: "/hooks/x" + "/" is "/hooks/x" (the endpoint's own URL), "" + "/a" is
// "/a", "/api" + "/v1/x" is "/api/v1/x".
std::string full_target(const HttpEndpoint& endpoint, const std::string& target) {
    if (endpoint.base_path.empty()) return target.empty() ? "/" : target;
    if (target.empty() || target == "/") return endpoint.base_path;
    if (target.front() == '?') return endpoint.base_path + target;
    return endpoint.base_path + (target.front() == '/' ? "" : "/") + target;
}

std::string endpoint_name(const HttpEndpoint& endpoint) {
    switch (endpoint.scheme) {
        case HttpEndpoint::Scheme::unix_socket:
            return "unix:" + endpoint.socket_path.string();
        case HttpEndpoint::Scheme::http:
        case HttpEndpoint::Scheme::https: {
            std::string host = endpoint.host.find(':') != std::string::npos
                                   ? "[" + endpoint.host + "]"
                                   : endpoint.host;
            return (endpoint.scheme == HttpEndpoint::Scheme::https ? "https://" : "http://") +
                   host + ":" + std::to_string(endpoint.port);
        }
    }
    return "?";
}

bool is_ssl_error(const boost::system::error_code& ec) {
    return ec.category() == asio::error::get_ssl_category();
}

// An alert that says the server refused who we are (our certificate, or its absence).
bool refused_our_certificate(const boost::system::error_code& ec) {
    if (!is_ssl_error(ec)) return false;
    switch (ERR_GET_REASON(static_cast<unsigned long>(ec.value()))) {
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
            return true;
        default:
            return false;
    }
}

// `our_certificate`: the subject of the client certificate we presented ("" when none).
Error transport_error(const std::string& where, const std::string& what,
                      const boost::system::error_code& ec,
                      const std::string& our_certificate = {}) {
    std::string text = where + ": " + what + ": " + ec.message();
    if (ec == beast::error::timeout || ec == asio::error::timed_out)
        return Error(ErrorKind::timeout, where + ": " + what + ": no answer before the deadline");
    if (refused_our_certificate(ec)) {
        // TLS 1.3 servers judge our certificate after our side of the handshake ended: the
        // refusal arrives as an alert on the first read, whatever we were doing.
        std::string alert = ERR_reason_error_string(static_cast<unsigned long>(ec.value()))
                                ? ERR_reason_error_string(static_cast<unsigned long>(ec.value()))
                                : ec.message();
        if (our_certificate.empty())
            return Error(ErrorKind::permission,
                         where +
                             ": the server requires a client certificate and none is "
                             "configured (" +
                             alert + ")");
        return Error(ErrorKind::permission, where + ": the server refused our client certificate " +
                                                our_certificate + " (" + alert + ")");
    }
    if (ec == asio::error::connection_refused || ec == asio::error::host_unreachable ||
        ec == asio::error::network_unreachable || ec == asio::error::not_found ||
        ec == asio::error::no_such_device || ec == asio::error::host_not_found ||
        ec == asio::error::host_not_found_try_again || ec == asio::error::no_data ||
        ec == asio::error::access_denied || ec == boost::system::errc::no_such_file_or_directory)
        return Error(ErrorKind::unavailable, text);
    return Error(ErrorKind::io, text);
}

// Everything one exchange needs, shared by the coroutine steps.
struct Exchange {
    const HttpEndpoint& endpoint;
    const HttpClientRequest& request;
    Clock::time_point deadline;
    std::string where;
    std::optional<Result<HttpResponse>> result;
    std::vector<tcp::endpoint> endpoints;  // http(s): where to connect, in order
    std::string our_certificate;           // https: the subject of our client certificate

    void fail_with(Error error) { result = std::unexpected<Error>(std::move(error)); }
};

http::request<http::string_body> make_message(const Exchange& x) {
    http::request<http::string_body> message;
    message.version(11);
    message.method_string(beast_view(x.request.method));
    message.target(beast_view(full_target(x.endpoint, x.request.target)));
    std::string host = "localhost";
    if (x.endpoint.scheme != HttpEndpoint::Scheme::unix_socket) {
        host = x.endpoint.host.find(':') != std::string::npos ? "[" + x.endpoint.host + "]"
                                                              : x.endpoint.host;
        host += ":" + std::to_string(x.endpoint.port);
    }
    message.set(http::field::host, host);
    message.set(http::field::user_agent, "vmshadow");
    if (!x.request.body.empty() && !x.request.content_type.empty())
        message.set(http::field::content_type, x.request.content_type);
    for (const auto& [name, value] : x.request.headers)
        message.set(beast_view(name), beast_view(value));
    message.body() = x.request.body;
    message.keep_alive(false);
    message.prepare_payload();
    return message;
}

template <class Stream>
asio::awaitable<void> exchange(Exchange& x, Stream& stream, beast::flat_buffer& buffer) {
    boost::system::error_code ec;
    auto message = make_message(x);
    beast::get_lowest_layer(stream).expires_at(x.deadline);
    co_await http::async_write(stream, message, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        x.fail_with(transport_error(x.where, "send the request", ec, x.our_certificate));
        co_return;
    }
    http::response_parser<http::string_body> parser;
    parser.header_limit(max_response_header);
    parser.body_limit(x.request.max_response_bytes);
    // The header on its own first: Beast 1.74's parser forgets the body limit of a
    // Content-Length when header and whole body come in one piece (eager mode), so the
    // length is checked here, before any of the body is read.
    beast::get_lowest_layer(stream).expires_at(x.deadline);
    co_await http::async_read_header(stream, buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && parser.content_length() && *parser.content_length() > x.request.max_response_bytes)
        ec = http::error::body_limit;
    if (!ec) {
        beast::get_lowest_layer(stream).expires_at(x.deadline);
        co_await http::async_read(stream, buffer, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
        x.fail_with(Error(ErrorKind::io, x.where + ": response larger than " +
                                             std::to_string(x.request.max_response_bytes) +
                                             " bytes"));
        co_return;
    }
    if (ec) {
        x.fail_with(transport_error(x.where, "read the response", ec, x.our_certificate));
        co_return;
    }
    auto& reply = parser.get();
    HttpResponse response;
    response.status = static_cast<int>(reply.result_int());
    response.content_type = std::string(std_view(reply[http::field::content_type]));
    for (const auto& field : reply) {
        if (field.name() == http::field::content_type) continue;
        response.headers.emplace_back(std::string(std_view(field.name_string())),
                                      std::string(std_view(field.value())));
    }
    response.body = std::move(reply.body());
    x.result = std::move(response);
}

asio::awaitable<void> run_unix(Exchange& x) {
    auto executor = co_await asio::this_coro::executor;
    UnixStream stream(executor);
    boost::system::error_code ec;
    stream.expires_at(x.deadline);
    co_await stream.async_connect(local::endpoint(x.endpoint.socket_path.string()),
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        x.fail_with(transport_error(x.where, "connect", ec));
        co_return;
    }
    beast::flat_buffer buffer;
    co_await exchange(x, stream, buffer);
}

asio::awaitable<void> run_http(Exchange& x) {
    auto executor = co_await asio::this_coro::executor;
    beast::tcp_stream stream(executor);
    boost::system::error_code ec;
    stream.expires_at(x.deadline);
    co_await stream.async_connect(x.endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        x.fail_with(transport_error(x.where, "connect", ec));
        co_return;
    }
    beast::flat_buffer buffer;
    co_await exchange(x, stream, buffer);
}

Status configure_tls(const HttpEndpoint& endpoint, ssl::context& context) {
    SSL_CTX* ctx = context.native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (endpoint.client_certificate_file.has_value() != endpoint.client_key_file.has_value())
        return fail(ErrorKind::invalid_argument,
                    "a client certificate needs both its certificate and key file");
    if (endpoint.client_certificate_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, endpoint.client_certificate_file->c_str()) !=
                1 ||
            SSL_CTX_use_PrivateKey_file(ctx, endpoint.client_key_file->c_str(), SSL_FILETYPE_PEM) !=
                1 ||
            SSL_CTX_check_private_key(ctx) != 1)
            return fail(ErrorKind::invalid_argument,
                        "client certificate " + endpoint.client_certificate_file->string() + ": " +
                            detail::openssl_error());
    }
    if (endpoint.insecure || endpoint.pinned_sha256) {
        // A pin is checked against the certificate itself after the handshake; a self-signed
        // certificate would fail chain verification.
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
        return {};
    }
    if (endpoint.ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, endpoint.ca_file->c_str(), nullptr) != 1)
            return fail(ErrorKind::invalid_argument,
                        "CA file " + endpoint.ca_file->string() + ": " + detail::openssl_error());
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return fail(ErrorKind::unavailable,
                    "the system's CA certificates: " + detail::openssl_error());
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, detail::note_verify_result);
    return {};
}

// SNI and the name (or address) the certificate must carry.
Status configure_peer_name(const HttpEndpoint& endpoint, SSL* ssl) {
    boost::system::error_code ec;
    asio::ip::make_address(endpoint.host, ec);
    bool ip_literal = !ec;
    if (!ip_literal && SSL_set_tlsext_host_name(ssl, endpoint.host.c_str()) != 1)
        return fail(ErrorKind::invalid_argument, "TLS server name " + endpoint.host);
    if (endpoint.insecure || endpoint.pinned_sha256) return {};
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    int ok = ip_literal ? X509_VERIFY_PARAM_set1_ip_asc(param, endpoint.host.c_str())
                        : X509_VERIFY_PARAM_set1_host(param, endpoint.host.c_str(), 0);
    if (ok != 1) return fail(ErrorKind::invalid_argument, "TLS peer name " + endpoint.host);
    return {};
}

asio::awaitable<void> run_https(Exchange& x) {
    auto executor = co_await asio::this_coro::executor;
    ssl::context context(ssl::context::tls_client);
    if (auto st = configure_tls(x.endpoint, context); !st) {
        x.fail_with(st.error().with_context(x.where));
        co_return;
    }
    if (X509* ours = SSL_CTX_get0_certificate(context.native_handle()))
        x.our_certificate = detail::subject_text(ours);
    TlsStream stream(executor, context);
    detail::VerifyNote note;
    detail::attach_verify_note(stream.native_handle(), &note);
    if (auto st = configure_peer_name(x.endpoint, stream.native_handle()); !st) {
        x.fail_with(st.error().with_context(x.where));
        co_return;
    }
    boost::system::error_code ec;
    auto& tcp_layer = beast::get_lowest_layer(stream);
    tcp_layer.expires_at(x.deadline);
    co_await tcp_layer.async_connect(x.endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        x.fail_with(transport_error(x.where, "connect", ec));
        co_return;
    }
    tcp_layer.expires_at(x.deadline);
    co_await stream.async_handshake(ssl::stream_base::client,
                                    asio::redirect_error(asio::use_awaitable, ec));
    SSL* ssl = stream.native_handle();
    if (ec) {
        long verify = SSL_get_verify_result(ssl);
        bool verifying = !x.endpoint.insecure && !x.endpoint.pinned_sha256;
        if (verifying && note.failed) {
            x.fail_with(Error(ErrorKind::permission, x.where + ": server certificate " +
                                                         note.subject + ": " + note.reason));
        } else if (verifying && verify != X509_V_OK) {
            x.fail_with(Error(ErrorKind::permission, x.where + ": TLS certificate not trusted: " +
                                                         X509_verify_cert_error_string(verify)));
        } else {
            x.fail_with(transport_error(x.where, "TLS handshake", ec, x.our_certificate));
        }
        co_return;
    }
    if (x.endpoint.pinned_sha256) {
        X509* cert = SSL_get1_peer_certificate(ssl);
        std::string actual = detail::sha256_fingerprint(cert);
        X509_free(cert);
        auto wanted = detail::normalize_fingerprint(*x.endpoint.pinned_sha256);
        if (!wanted || actual != *wanted) {
            x.fail_with(Error(ErrorKind::permission,
                              x.where + ": TLS certificate fingerprint " + actual +
                                  " is not the pinned one; if the server's certificate was "
                                  "replaced on purpose, pin the new fingerprint"));
            co_return;
        }
    }
    beast::flat_buffer buffer;
    co_await exchange(x, stream, buffer);
}

// The addresses of `host`, by the deadline. An IP literal is its own answer; a name goes
// through getaddrinfo on a thread of its own that is left behind past the deadline: Asio's
// resolver would hold us (its destructor joins) as long as a dead DNS server holds it.
Result<std::vector<tcp::endpoint>> resolve(const std::string& host, std::uint16_t port,
                                           Clock::time_point deadline, const std::string& where) {
    boost::system::error_code ec;
    auto literal = asio::ip::make_address(host, ec);
    if (!ec) return std::vector<tcp::endpoint>{tcp::endpoint(literal, port)};

    struct Lookup {
        std::mutex mutex;
        std::condition_variable done_cv;
        bool done = false;
        int status = 0;
        std::vector<tcp::endpoint> endpoints;
    };
    auto lookup = std::make_shared<Lookup>();
    try {
        std::thread([lookup, host, port] {
            addrinfo hints{};
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            addrinfo* list = nullptr;
            int status = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
            std::vector<tcp::endpoint> found;
            for (auto* a = list; status == 0 && a != nullptr; a = a->ai_next) {
                tcp::endpoint e;
                if (a->ai_addrlen > e.capacity()) continue;
                std::memcpy(e.data(), a->ai_addr, a->ai_addrlen);
                e.resize(a->ai_addrlen);
                found.push_back(e);
            }
            if (list != nullptr) ::freeaddrinfo(list);
            std::lock_guard lock(lookup->mutex);
            lookup->status = status;
            lookup->endpoints = std::move(found);
            lookup->done = true;
            lookup->done_cv.notify_all();
        }).detach();
    } catch (const std::system_error& e) {
        return fail(ErrorKind::io, where + ": resolve " + host + ": " + e.what());
    }
    std::unique_lock lock(lookup->mutex);
    if (!lookup->done_cv.wait_until(lock, deadline, [&] { return lookup->done; }))
        return fail(ErrorKind::timeout,
                    where + ": resolve " + host + ": no answer before the deadline");
    if (lookup->status != 0 || lookup->endpoints.empty())
        return fail(ErrorKind::unavailable,
                    where + ": resolve " + host + ": " +
                        (lookup->status != 0 ? ::gai_strerror(lookup->status) : "no address"));
    return std::move(lookup->endpoints);
}

Result<std::uint16_t> parse_port(std::string_view text) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 ||
        value > 65535)
        return fail(ErrorKind::invalid_argument, "bad port '" + std::string(text) + "'");
    return static_cast<std::uint16_t>(value);
}

}  // namespace

Result<HttpEndpoint> HttpEndpoint::parse(std::string_view url) {
    auto bad = [&](const std::string& why) {
        return fail(ErrorKind::invalid_argument, "endpoint '" + std::string(url) + "': " + why +
                                                     " (use unix:/path, http://host:port/path "
                                                     "or https://host:port/path)");
    };
    HttpEndpoint endpoint;
    if (starts_with_nocase(url, "unix:")) {
        std::string_view path = url.substr(5);
        if (path.empty() || path.front() != '/') return bad("the socket path must be absolute");
        endpoint.scheme = Scheme::unix_socket;
        endpoint.socket_path = std::string(path);
        return endpoint;
    }
    std::string_view rest;
    if (starts_with_nocase(url, "https://")) {
        endpoint.scheme = Scheme::https;
        endpoint.port = 443;
        rest = url.substr(8);
    } else if (starts_with_nocase(url, "http://")) {
        endpoint.scheme = Scheme::http;
        endpoint.port = 80;
        rest = url.substr(7);
    } else {
        return bad("unknown scheme");
    }
    if (rest.find('#') != std::string_view::npos) return bad("a fragment is not allowed");
    if (has_control_or_space(rest)) return bad("spaces and control characters are not allowed");
    auto slash = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
    if (authority.find('@') != std::string_view::npos) return bad("user info is not allowed");
    std::string_view port_text;
    if (!authority.empty() && authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string_view::npos) return bad("unclosed '[' in the host");
        endpoint.host = std::string(authority.substr(1, close - 1));
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return bad("junk after ']'");
            port_text = after.substr(1);
            if (port_text.empty()) return bad("empty port");
        }
        boost::system::error_code ec;
        asio::ip::make_address_v6(endpoint.host, ec);
        if (ec) return bad("not an IPv6 address in brackets");
    } else {
        auto colon = authority.find(':');
        endpoint.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) {
            port_text = authority.substr(colon + 1);
            if (port_text.empty()) return bad("empty port");
        }
    }
    if (endpoint.host.empty()) return bad("no host");
    if (!port_text.empty()) {
        auto port = parse_port(port_text);
        if (!port) return bad(port.error().message());
        endpoint.port = *port;
    }
    std::string base(path);
    if (!base.empty() && base.front() == '?') base.insert(0, "/");
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    if (base == "/") base.clear();
    endpoint.base_path = std::move(base);
    return endpoint;
}

Result<HttpResponse> http_request(const HttpEndpoint& endpoint, const HttpClientRequest& request) {
    if (endpoint.pinned_sha256 && !detail::normalize_fingerprint(*endpoint.pinned_sha256))
        return fail(ErrorKind::invalid_argument,
                    "pinned fingerprint '" + *endpoint.pinned_sha256 +
                        "' is not a SHA-256 fingerprint (64 hex digits, ':' optional)");
    if (has_control_or_space(request.method) || request.method.empty())
        return fail(ErrorKind::invalid_argument, "bad HTTP method '" + request.method + "'");
    if (has_control_or_space(request.target))
        return fail(ErrorKind::invalid_argument, "bad HTTP target '" + request.target + "'");
    for (const auto& [name, value] : request.headers) {
        // No header may smuggle in a line of its own.
        if (name.empty() || has_control_or_space(name) ||
            value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
            return fail(ErrorKind::invalid_argument, "bad HTTP header '" + name + "'");
    }
    Exchange x{endpoint, request, Clock::now() + request.timeout, endpoint_name(endpoint),
               std::nullopt};
    if (endpoint.scheme != HttpEndpoint::Scheme::unix_socket) {
        auto found = resolve(endpoint.host, endpoint.port, x.deadline, x.where);
        if (!found) return fail(found.error());
        x.endpoints = std::move(*found);
    }
    asio::io_context io(1);
    auto run = [&]() -> asio::awaitable<void> {
        switch (endpoint.scheme) {
            case HttpEndpoint::Scheme::unix_socket:
                co_await run_unix(x);
                break;
            case HttpEndpoint::Scheme::http:
                co_await run_http(x);
                break;
            case HttpEndpoint::Scheme::https:
                co_await run_https(x);
                break;
        }
    };
    std::exception_ptr failure;
    asio::co_spawn(io, run(), [&](std::exception_ptr e) { failure = e; });
    io.run();
    if (failure || !x.result) {
        std::string what = "unexpected failure";
        try {
            if (failure) std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        return fail(ErrorKind::io, x.where + ": " + what);
    }
    return std::move(*x.result);
}

}  // namespace vmshadow::net
