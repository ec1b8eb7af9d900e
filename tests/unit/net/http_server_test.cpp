// SPDX-License-Identifier: MIT
// HttpServer over a unix socket and over TLS on 127.0.0.1: requests reach the handler whole,
// limits answer with the documented status, hostile clients cost a bounded connection, and
// stop() is quick.
#include "net/http_server.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "net/http_client.h"
#include "net/tls_identity.h"
#include "unit/net/net_test_util.h"

namespace vmshadow::net {
namespace {

using namespace std::chrono_literals;
using test::connect_tcp;
using test::connect_unix;
using test::count_of;
using test::read_for;
using test::send_all;

// Tells the test what the handler saw.
HttpResponse echo(const HttpRequest& request) {
    HttpResponse response;
    response.content_type = "text/plain";
    std::string text = "M=" + request.method + " P=" + request.path + " Q=";
    for (const auto& [k, v] : request.query) text += k + ":" + v + ";";
    text += " H=" + request.header("X-Test") + " B=" + request.body;
    text += " unix=" + std::to_string(request.peer.unix_socket);
    if (request.peer.uid) text += " uid=" + std::to_string(*request.peer.uid);
    if (request.peer.client_certificate_sha256)
        text += " cert=" + *request.peer.client_certificate_sha256;
    response.body = text;
    response.headers.emplace_back("X-Echo", "yes");
    return response;
}

class HttpServerTest : public ::testing::Test {
  protected:
    test::NetTempDir dir;
    std::filesystem::path socket_path = dir.at("api.sock");

    std::unique_ptr<HttpServer> start_unix(HttpServerOptions options = {},
                                           HttpHandler handler = echo) {
        options.unix_sockets.push_back({socket_path, 0600});
        auto server = HttpServer::start(options, std::move(handler));
        EXPECT_TRUE(server) << (server ? "" : server.error().message());
        return server ? std::move(*server) : nullptr;
    }

    TlsIdentity identity() {
        auto id = ensure_tls_identity(dir.at("tls"));
        EXPECT_TRUE(id) << (id ? "" : id.error().message());
        return id ? *id : TlsIdentity{};
    }

    std::unique_ptr<HttpServer> start_tls(const TlsIdentity& id, HttpServerOptions options = {},
                                          HttpHandler handler = echo,
                                          std::optional<std::filesystem::path> client_ca = {}) {
        TlsListener listener;
        listener.certificate_file = id.certificate_file;
        listener.key_file = id.key_file;
        listener.client_ca_file = client_ca;
        options.tls.push_back(listener);
        auto server = HttpServer::start(options, std::move(handler));
        EXPECT_TRUE(server) << (server ? "" : server.error().message());
        return server ? std::move(*server) : nullptr;
    }

    HttpEndpoint unix_endpoint() const {
        HttpEndpoint endpoint;
        endpoint.scheme = HttpEndpoint::Scheme::unix_socket;
        endpoint.socket_path = socket_path;
        return endpoint;
    }

    static HttpEndpoint https_endpoint(std::uint16_t port, std::string pin) {
        auto endpoint = HttpEndpoint::parse("https://127.0.0.1:" + std::to_string(port));
        EXPECT_TRUE(endpoint);
        endpoint->pinned_sha256 = std::move(pin);
        return *endpoint;
    }
};

TEST_F(HttpServerTest, UnixSocketRequestReachesHandlerWithPeerUid) {
    auto server = start_unix();
    ASSERT_TRUE(server);
    struct stat st {};
    ASSERT_EQ(::stat(socket_path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    HttpClientRequest request;
    request.method = "POST";
    request.target = "/api/v1/a%20b?x=1&y=two+words&x=3";
    request.body = "hello";
    request.headers.emplace_back("X-Test", "header value");
    auto response = http_request(unix_endpoint(), request);
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->content_type, "text/plain");
    EXPECT_EQ(response->body,
              "M=POST P=/api/v1/a b Q=x:3;y:two words; H=header value B=hello "
              "unix=1 uid=" +
                  std::to_string(::geteuid()));
    bool echoed = false;
    for (const auto& [name, value] : response->headers)
        if (name == "X-Echo" && value == "yes") echoed = true;
    EXPECT_TRUE(echoed);

    server->stop();
    EXPECT_FALSE(std::filesystem::exists(socket_path));
}

TEST_F(HttpServerTest, UnixSocketCreatedWithTheGivenMode) {
    HttpServerOptions options;
    options.unix_sockets.push_back({socket_path, 0660});
    auto server = HttpServer::start(options, echo);
    ASSERT_TRUE(server) << server.error().message();
    struct stat st {};
    ASSERT_EQ(::stat(socket_path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0660u);
    // No temp folder of the bind-then-rename is left beside it.
    std::size_t entries = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path)) {
        (void)e;
        ++entries;
    }
    EXPECT_EQ(entries, 1u);
}

TEST_F(HttpServerTest, StaleSocketFileIsReplaced) {
    {
        auto first = start_unix();
        ASSERT_TRUE(first);
    }
    // A socket nobody listens on, as a killed daemon leaves it.
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    fd.reset();
    ASSERT_TRUE(std::filesystem::exists(socket_path));
    auto server = start_unix();
    ASSERT_TRUE(server);
    auto response = http_request(unix_endpoint(), {});
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
}

TEST_F(HttpServerTest, RefusesSocketPathHeldByLiveServerOrRegularFile) {
    auto server = start_unix();
    ASSERT_TRUE(server);
    HttpServerOptions options;
    options.unix_sockets.push_back({socket_path, 0600});
    auto second = HttpServer::start(options, echo);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().kind(), ErrorKind::conflict);
    server->stop();

    { std::ofstream(dir.at("file")) << "keep me"; }
    HttpServerOptions on_file;
    on_file.unix_sockets.push_back({dir.at("file"), 0600});
    auto third = HttpServer::start(on_file, echo);
    ASSERT_FALSE(third);
    EXPECT_EQ(third.error().kind(), ErrorKind::conflict);
    EXPECT_TRUE(std::filesystem::is_regular_file(dir.at("file")));
}

TEST_F(HttpServerTest, FailedListenerClosesTheOthers) {
    HttpServerOptions options;
    options.unix_sockets.push_back({socket_path, 0600});
    options.unix_sockets.push_back({dir.at("missing-dir/x.sock"), 0600});
    auto server = HttpServer::start(options, echo);
    ASSERT_FALSE(server);
    EXPECT_NE(server.error().message().find("missing-dir"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(socket_path));
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
    auto server = start_unix();
    ASSERT_TRUE(server);
    auto fd = connect_unix(socket_path);
    ASSERT_TRUE(fd);
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(
            send_all(fd.get(), "GET /n" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n"));
        auto got = read_for(fd.get(), 5s, "unix=1 uid=");
        EXPECT_FALSE(got.closed);
        EXPECT_NE(got.data.find("HTTP/1.1 200 OK"), std::string::npos);
        EXPECT_NE(got.data.find("P=/n" + std::to_string(i)), std::string::npos);
    }
    // Pipelined, the last one asking to close.
    ASSERT_TRUE(send_all(fd.get(),
                         "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                         "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    auto got = read_for(fd.get(), 5s);
    EXPECT_TRUE(got.closed);
    EXPECT_EQ(count_of(got.data, "HTTP/1.1 200 OK"), 2u);
}

TEST_F(HttpServerTest, OversizedContentLengthGets413WithoutReadingTheBody) {
    HttpServerOptions options;
    options.max_body_bytes = 1024;
    std::atomic<int> calls{0};
    auto server = start_unix(options, [&](const HttpRequest& r) {
        ++calls;
        return echo(r);
    });
    ASSERT_TRUE(server);
    auto fd = connect_unix(socket_path);
    ASSERT_TRUE(fd);
    // Announces 10 GB and sends none of it: the answer comes anyway.
    ASSERT_TRUE(
        send_all(fd.get(), "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n"));
    auto got = read_for(fd.get(), 5s);
    EXPECT_EQ(got.data.rfind("HTTP/1.1 413 Payload Too Large", 0), 0u) << got.data;
    EXPECT_TRUE(got.closed);

    // Through the client with the body sent: the client still sees the 413.
    HttpClientRequest request;
    request.method = "PUT";
    request.body.assign(4096, 'x');
    auto response = http_request(unix_endpoint(), request);
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 413);
    EXPECT_EQ(calls.load(), 0);

    // At the limit exactly it is served.
    request.body.assign(1024, 'x');
    response = http_request(unix_endpoint(), request);
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
}

TEST_F(HttpServerTest, OversizedChunkedBodyGets413) {
    HttpServerOptions options;
    options.max_body_bytes = 1024;
    auto server = start_unix(options);
    ASSERT_TRUE(server);
    auto fd = connect_unix(socket_path);
    ASSERT_TRUE(fd);
    std::string chunk(600, 'y');
    std::string message = "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 3; ++i) message += "258\r\n" + chunk + "\r\n";  // 0x258 = 600
    message += "0\r\n\r\n";
    ASSERT_TRUE(send_all(fd.get(), message));
    auto got = read_for(fd.get(), 5s);
    EXPECT_EQ(got.data.rfind("HTTP/1.1 413", 0), 0u) << got.data;
    EXPECT_TRUE(got.closed);
}

TEST_F(HttpServerTest, ExpectContinueGets100ThenTheResponseOr413AtOnce) {
    HttpServerOptions options;
    options.max_body_bytes = 1024;
    auto server = start_unix(options);
    ASSERT_TRUE(server);
    auto fd = connect_unix(socket_path);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(send_all(fd.get(),
                         "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                         "Expect: 100-continue\r\n\r\n"));
    auto go_on = read_for(fd.get(), 5s, "\r\n\r\n");
    EXPECT_EQ(go_on.data.rfind("HTTP/1.1 100 Continue", 0), 0u) << go_on.data;
    ASSERT_TRUE(send_all(fd.get(), "hello"));
    auto got = read_for(fd.get(), 5s, "uid=");
    EXPECT_NE(got.data.find("B=hello"), std::string::npos) << got.data;

    auto big = connect_unix(socket_path);
    ASSERT_TRUE(big);
    ASSERT_TRUE(send_all(big.get(),
                         "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                         "Expect: 100-continue\r\n\r\n"));
    auto refused = read_for(big.get(), 5s);
    EXPECT_EQ(refused.data.rfind("HTTP/1.1 413", 0), 0u) << refused.data;
}

TEST_F(HttpServerTest, GarbageGets400AndTheServerGoesOn) {
    auto server = start_unix();
    ASSERT_TRUE(server);
    for (std::string garbage : {std::string("\x16\x03\x01\x02\x00garbage\r\n\r\n", 16),
                                std::string("GET\r\n\r\n"), std::string("GET / HTTP/9.9\r\n\r\n"),
                                std::string("GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
                                std::string("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
                                std::string("GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n"),
                                std::string("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n")}) {
        auto fd = connect_unix(socket_path);
        ASSERT_TRUE(fd);
        ASSERT_TRUE(send_all(fd.get(), garbage));
        auto got = read_for(fd.get(), 5s, "\r\n\r\n");
        EXPECT_EQ(got.data.rfind("HTTP/1.1 400", 0), 0u) << "for " << garbage << ": " << got.data;
    }
    auto response = http_request(unix_endpoint(), {});
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
}

TEST_F(HttpServerTest, HeaderTooLargeGets431) {
    HttpServerOptions options;
    options.max_header_bytes = 4096;
    auto server = start_unix(options);
    ASSERT_TRUE(server);
    auto fd = connect_unix(socket_path);
    ASSERT_TRUE(fd);
    std::string request =
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8192, 'a') + "\r\n\r\n";
    send_all(fd.get(), request);  // the server may close before it took all of it
    auto got = read_for(fd.get(), 5s);
    EXPECT_EQ(got.data.rfind("HTTP/1.1 431", 0), 0u) << got.data;
}

TEST_F(HttpServerTest, IdleAndHalfSentRequestsAreClosedAfterTheTimeout) {
    HttpServerOptions options;
    options.idle_timeout = 1s;
    auto server = start_unix(options);
    ASSERT_TRUE(server);
    auto idle = connect_unix(socket_path);
    auto half_header = connect_unix(socket_path);
    auto half_body = connect_unix(socket_path);
    ASSERT_TRUE(idle && half_header && half_body);
    send_all(half_header.get(), "GET / HTTP/1.1\r\nHost:");
    send_all(half_body.get(),
             "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(read_for(idle.get(), 5s).closed);
    EXPECT_TRUE(read_for(half_header.get(), 5s).closed);
    EXPECT_TRUE(read_for(half_body.get(), 5s).closed);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
}

TEST_F(HttpServerTest, HandlerThatThrowsGets500) {
    auto server = start_unix({}, [](const HttpRequest& r) -> HttpResponse {
        if (r.path == "/throw") throw std::runtime_error("bug");
        if (r.path == "/throw-int") throw 42;
        return echo(r);
    });
    ASSERT_TRUE(server);
    for (const char* target : {"/throw", "/throw-int"}) {
        HttpClientRequest request;
        request.target = target;
        auto response = http_request(unix_endpoint(), request);
        ASSERT_TRUE(response) << response.error().message();
        EXPECT_EQ(response->status, 500);
        EXPECT_NE(response->body.find("\"kind\": \"internal\""), std::string::npos);
    }
    auto response = http_request(unix_endpoint(), {});
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200);
}

TEST_F(HttpServerTest, ResponsesBeastCannotWriteBecome500AndHeadGetsNoBody) {
    auto server = start_unix({}, [](const HttpRequest& r) {
        HttpResponse response;
        response.body = "body";
        if (r.path == "/status0") response.status = 0;
        if (r.path == "/status5000") response.status = 5000;
        if (r.path == "/no-content") response.status = 204;
        if (r.path == "/bad-header") response.headers.emplace_back("", "x");
        if (r.path == "/split-header") response.headers.emplace_back("X-A", "1\r\nX-B: 2");
        return response;
    });
    ASSERT_TRUE(server);
    for (const char* target : {"/status0", "/status5000", "/bad-header", "/split-header"}) {
        HttpClientRequest request;
        request.target = target;
        auto response = http_request(unix_endpoint(), request);
        ASSERT_TRUE(response) << response.error().message();
        EXPECT_EQ(response->status, 500) << target;
    }
    auto fd = connect_unix(socket_path);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(send_all(fd.get(),
                         "GET /no-content HTTP/1.1\r\nHost: x\r\n\r\n"
                         "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    auto got = read_for(fd.get(), 5s);
    EXPECT_EQ(got.data.rfind("HTTP/1.1 204 No Content\r\n", 0), 0u) << got.data;
    EXPECT_NE(got.data.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << got.data;
    EXPECT_NE(got.data.find("Content-Length: 4\r\n"), std::string::npos) << got.data;
    EXPECT_EQ(got.data.find("body"), std::string::npos) << got.data;
}

TEST_F(HttpServerTest, StopWithAnIdleKeepAliveClientReturnsQuickly) {
    auto server = start_unix();  // idle timeout 30 s
    ASSERT_TRUE(server);
    auto fd = connect_unix(socket_path);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(send_all(fd.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_NE(read_for(fd.get(), 5s, "uid=").data.find("200 OK"), std::string::npos);
    auto silent = connect_unix(socket_path);  // connected, never sent a byte
    ASSERT_TRUE(silent);
    std::this_thread::sleep_for(100ms);
    auto start = std::chrono::steady_clock::now();
    server->stop();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    EXPECT_TRUE(read_for(fd.get(), 2s).closed);
    EXPECT_TRUE(read_for(silent.get(), 2s).closed);
    EXPECT_FALSE(std::filesystem::exists(socket_path));
}

TEST_F(HttpServerTest, StopLetsABusyRequestFinishItsResponse) {
    std::atomic<bool> entered{false};
    auto server = start_unix({}, [&](const HttpRequest& r) {
        entered = true;
        std::this_thread::sleep_for(300ms);
        return echo(r);
    });
    ASSERT_TRUE(server);
    std::optional<Result<HttpResponse>> response;
    std::thread client([&] { response = http_request(unix_endpoint(), {}); });
    while (!entered) std::this_thread::sleep_for(5ms);
    server->stop();
    client.join();
    ASSERT_TRUE(response && *response) << (*response).error().message();
    EXPECT_EQ((*response)->status, 200);
}

TEST_F(HttpServerTest, MaxConnectionsLeavesTheRestInTheBacklog) {
    HttpServerOptions options;
    options.max_connections = 2;
    auto server = start_unix(options);
    ASSERT_TRUE(server);
    auto a = connect_unix(socket_path);
    auto b = connect_unix(socket_path);
    ASSERT_TRUE(a && b);
    std::this_thread::sleep_for(200ms);  // both accepted
    auto c = connect_unix(socket_path);  // in the backlog
    ASSERT_TRUE(c);
    ASSERT_TRUE(send_all(c.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(read_for(c.get(), 300ms).data, "");
    a.reset();
    auto got = read_for(c.get(), 5s, "uid=");
    EXPECT_NE(got.data.find("200 OK"), std::string::npos);
}

TEST_F(HttpServerTest, ThousandsOfConnectionsStayBounded) {
    HttpServerOptions options;
    options.max_connections = 64;
    options.threads = 2;
    options.idle_timeout = 2s;
    auto server = start_unix(options);
    ASSERT_TRUE(server);
    std::vector<UniqueFd> clients;
    for (int i = 0; i < 1500; ++i) {
        auto fd = connect_unix(socket_path);  // fails once the backlog is full: fine
        if (fd) clients.push_back(std::move(fd));
        if (i % 3 == 0 && fd) send_all(clients.back().get(), "GARBAGE");
    }
    clients.clear();
    HttpClientRequest request;
    request.timeout = 10s;
    auto response = http_request(unix_endpoint(), request);
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
}

// ---- TLS ----------------------------------------------------------------------------------

TEST_F(HttpServerTest, TlsRequestWithPinnedFingerprint) {
    auto id = identity();
    auto server = start_tls(id);
    ASSERT_TRUE(server);
    ASSERT_NE(server->tls_port(), 0);
    HttpClientRequest request;
    request.target = "/tls?q=1";
    auto response =
        http_request(https_endpoint(server->tls_port(), id.sha256_fingerprint), request);
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
    EXPECT_NE(response->body.find("P=/tls Q=q:1;"), std::string::npos);
    EXPECT_NE(response->body.find("unix=0"), std::string::npos);
    EXPECT_EQ(response->body.find("uid="), std::string::npos);

    // The pin as plain lower-case hex works the same.
    std::string plain;
    for (char c : id.sha256_fingerprint)
        if (c != ':') plain.push_back(static_cast<char>(std::tolower(c)));
    response = http_request(https_endpoint(server->tls_port(), plain), request);
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
}

TEST_F(HttpServerTest, TlsOverIpv6LoopbackNamesThePeer) {
    auto id = identity();
    HttpServerOptions options;
    TlsListener listener;
    listener.address = "::1";
    listener.certificate_file = id.certificate_file;
    listener.key_file = id.key_file;
    options.tls.push_back(listener);
    auto server = HttpServer::start(options, [](const HttpRequest& r) {
        HttpResponse response;
        response.body = r.peer.address;
        return response;
    });
    if (!server) GTEST_SKIP() << "no IPv6 loopback here: " << server.error().message();
    auto endpoint =
        HttpEndpoint::parse("https://[::1]:" + std::to_string((*server)->tls_port()) + "/");
    ASSERT_TRUE(endpoint);
    endpoint->ca_file = id.certificate_file;  // the certificate names IP ::1
    auto response = http_request(*endpoint, {});
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->body.rfind("[::1]:", 0), 0u) << response->body;
}

TEST_F(HttpServerTest, TlsWrongPinFailsWithPermission) {
    auto id = identity();
    auto server = start_tls(id);
    ASSERT_TRUE(server);
    std::string wrong = id.sha256_fingerprint;
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    auto response = http_request(https_endpoint(server->tls_port(), wrong), {});
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission) << response.error().message();
}

TEST_F(HttpServerTest, TlsVerifiesByCaFileAndRefusesAnUnknownCertificate) {
    auto id = identity();
    auto server = start_tls(id);
    ASSERT_TRUE(server);
    auto endpoint = HttpEndpoint::parse("https://127.0.0.1:" + std::to_string(server->tls_port()));
    ASSERT_TRUE(endpoint);
    endpoint->ca_file = id.certificate_file;
    auto response = http_request(*endpoint, {});
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);

    endpoint->ca_file.reset();  // the system's CAs do not know a self-signed certificate
    response = http_request(*endpoint, {});
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission) << response.error().message();

    endpoint->insecure = true;
    response = http_request(*endpoint, {});
    ASSERT_TRUE(response) << response.error().message();
}

TEST_F(HttpServerTest, TlsPortSurvivesGarbageAndAStalledHandshake) {
    auto id = identity();
    HttpServerOptions options;
    options.threads = 1;
    options.idle_timeout = 1s;
    auto server = start_tls(id, options);
    ASSERT_TRUE(server);
    auto stalled = connect_tcp(server->tls_port());  // never says hello
    auto garbage = connect_tcp(server->tls_port());
    ASSERT_TRUE(stalled && garbage);
    send_all(garbage.get(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(read_for(garbage.get(), 5s).closed);
    auto response = http_request(https_endpoint(server->tls_port(), id.sha256_fingerprint), {});
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
    EXPECT_TRUE(read_for(stalled.get(), 5s).closed);  // the handshake timed out
}

}  // namespace
}  // namespace vmshadow::net
