// SPDX-License-Identifier: MIT
// HttpEndpoint::parse and http_request's failures: each with the documented kind, and every
// exchange bounded by its timeout.
#include "net/http_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>

#include <chrono>
#include <thread>

#include "net/http_server.h"
#include "unit/net/net_test_util.h"

namespace vmshadow::net {
namespace {

using namespace std::chrono_literals;

TEST(HttpEndpointTest, ParsesUnixHttpAndHttps) {
    auto u = HttpEndpoint::parse("unix:/run/vmshadow/api.sock");
    ASSERT_TRUE(u);
    EXPECT_EQ(u->scheme, HttpEndpoint::Scheme::unix_socket);
    EXPECT_EQ(u->socket_path, "/run/vmshadow/api.sock");

    auto h = HttpEndpoint::parse("http://hooks.example.org/hooks/x/");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->scheme, HttpEndpoint::Scheme::http);
    EXPECT_EQ(h->host, "hooks.example.org");
    EXPECT_EQ(h->port, 80);
    EXPECT_EQ(h->base_path, "/hooks/x");

    auto s = HttpEndpoint::parse("HTTPS://[::1]:8470");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->scheme, HttpEndpoint::Scheme::https);
    EXPECT_EQ(s->host, "::1");
    EXPECT_EQ(s->port, 8470);
    EXPECT_EQ(s->base_path, "");

    auto d = HttpEndpoint::parse("https://backup.lan");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->port, 443);

    auto q = HttpEndpoint::parse("http://h:81?token=a");
    ASSERT_TRUE(q);
    EXPECT_EQ(q->base_path, "/?token=a");
}

TEST(HttpEndpointTest, RefusesMalformedEndpoints) {
    for (const char* bad :
         {"", "ftp://x", "unix:", "unix:relative.sock", "http://", "http://:80", "http://h:0",
          "http://h:65536", "http://h:8x", "http://h:", "http://user:pw@h/", "http://h/x#frag",
          "https://[::1", "https://[::1]x", "https://[nothex]:1", "http://h/a b", "h:80"}) {
        auto e = HttpEndpoint::parse(bad);
        EXPECT_FALSE(e) << bad;
        if (!e) {
            EXPECT_EQ(e.error().kind(), ErrorKind::invalid_argument) << bad;
        }
    }
}

TEST(HttpClientTest, NoServerIsUnavailable) {
    test::NetTempDir dir;
    auto u = HttpEndpoint::parse("unix:" + dir.at("none.sock").string());
    ASSERT_TRUE(u);
    auto r = http_request(*u, {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::unavailable) << r.error().message();

    // Nothing listens on port 1 of the loopback.
    ASSERT_FALSE(test::connect_tcp(1));
    std::uint16_t port = 1;
    auto h = HttpEndpoint::parse("http://127.0.0.1:" + std::to_string(port));
    ASSERT_TRUE(h);
    r = http_request(*h, {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::unavailable) << r.error().message();
}

TEST(HttpClientTest, SlowServerTimesOutWithinTheTimeout) {
    test::NetTempDir dir;
    HttpServerOptions options;
    options.unix_sockets.push_back({dir.at("s.sock"), 0600});
    auto server = HttpServer::start(options, [](const HttpRequest&) {
        std::this_thread::sleep_for(1s);
        return HttpResponse{};
    });
    ASSERT_TRUE(server) << server.error().message();
    auto endpoint = HttpEndpoint::parse("unix:" + dir.at("s.sock").string());
    HttpClientRequest request;
    request.timeout = 200ms;
    auto start = std::chrono::steady_clock::now();
    auto r = http_request(*endpoint, request);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 900ms);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::timeout) << r.error().message();
}

TEST(HttpClientTest, OversizedResponseIsAnIoError) {
    test::NetTempDir dir;
    HttpServerOptions options;
    options.unix_sockets.push_back({dir.at("s.sock"), 0600});
    auto server = HttpServer::start(options, [](const HttpRequest&) {
        HttpResponse response;
        response.body.assign(100000, 'z');
        return response;
    });
    ASSERT_TRUE(server) << server.error().message();
    auto endpoint = HttpEndpoint::parse("unix:" + dir.at("s.sock").string());
    HttpClientRequest request;
    request.max_response_bytes = 1000;
    auto r = http_request(*endpoint, request);
    ASSERT_FALSE(r) << r->status << " " << r->body.size();
    EXPECT_EQ(r.error().kind(), ErrorKind::io) << r.error().message();
    request.max_response_bytes = 100000;
    r = http_request(*endpoint, request);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->body.size(), 100000u);
}

TEST(HttpClientTest, BasePathPrefixesTheTarget) {
    test::NetTempDir dir;
    HttpServerOptions options;
    options.unix_sockets.push_back({dir.at("s.sock"), 0600});
    auto server = HttpServer::start(options, [](const HttpRequest& r) {
        HttpResponse response;
        response.body = r.target;
        return response;
    });
    ASSERT_TRUE(server);
    auto endpoint = HttpEndpoint::parse("unix:" + dir.at("s.sock").string());
    endpoint->base_path = "/hooks/x";
    HttpClientRequest request;
    EXPECT_EQ(http_request(*endpoint, request)->body, "/hooks/x");
    request.target = "/y?z=1";
    EXPECT_EQ(http_request(*endpoint, request)->body, "/hooks/x/y?z=1");
    endpoint->base_path.clear();
    EXPECT_EQ(http_request(*endpoint, request)->body, "/y?z=1");
}

// A one-shot HTTP server on 127.0.0.1 that answers one connection with `reply`, raw.
class RawServer {
  public:
    explicit RawServer(std::string reply) : reply_(std::move(reply)) {
        fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof addr;
        ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        ::listen(fd_.get(), 4);
        ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &length);
        port_ = ntohs(addr.sin_port);
        thread_ = std::thread([this] {
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) return;
            UniqueFd client(::accept(fd_.get(), nullptr, nullptr));
            request_ = test::read_for(client.get(), 2000ms, "\r\n\r\n").data;
            test::send_all(client.get(), reply_);
        });
    }
    ~RawServer() { thread_.join(); }
    std::uint16_t port() const { return port_; }
    const std::string& request() const { return request_; }

  private:
    std::string reply_;
    UniqueFd fd_;
    std::uint16_t port_ = 0;
    std::string request_;
    std::thread thread_;
};

TEST(HttpClientTest, PlainHttpExchange) {
    RawServer raw(
        "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nRetry-After: 5\r\n"
        "Content-Length: 2\r\n\r\nok");
    auto endpoint = HttpEndpoint::parse("http://127.0.0.1:" + std::to_string(raw.port()) + "/hook");
    ASSERT_TRUE(endpoint);
    HttpClientRequest request;
    request.method = "POST";
    request.body = "{}";
    auto r = http_request(*endpoint, request);
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, 201);
    EXPECT_EQ(r->content_type, "text/plain");
    EXPECT_EQ(r->body, "ok");
    bool retry_after = false;
    for (const auto& [name, value] : r->headers)
        if (name == "Retry-After" && value == "5") retry_after = true;
    EXPECT_TRUE(retry_after);
    EXPECT_EQ(raw.request().rfind("POST /hook HTTP/1.1\r\n", 0), 0u) << raw.request();
}

TEST(HttpClientTest, HostNamesAreResolvedWithinTheTimeout) {
    RawServer raw("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    auto endpoint = HttpEndpoint::parse("http://localhost:" + std::to_string(raw.port()));
    ASSERT_TRUE(endpoint);
    auto r = http_request(*endpoint, {});
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, 200);

    auto nowhere = HttpEndpoint::parse("http://no-such-host.invalid:80");
    ASSERT_TRUE(nowhere);
    HttpClientRequest request;
    request.timeout = 2s;
    auto start = std::chrono::steady_clock::now();
    r = http_request(*nowhere, request);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().kind() == ErrorKind::unavailable ||
                r.error().kind() == ErrorKind::timeout)
        << r.error().message();
}

TEST(HttpClientTest, MalformedResponseIsAnIoError) {
    RawServer raw("SMTP ready\r\n\r\n");
    auto endpoint = HttpEndpoint::parse("http://127.0.0.1:" + std::to_string(raw.port()));
    ASSERT_TRUE(endpoint);
    auto r = http_request(*endpoint, {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::io) << r.error().message();
}

TEST(HttpClientTest, RefusesHeadersThatWouldInjectLines) {
    auto endpoint = HttpEndpoint::parse("http://127.0.0.1:1");
    ASSERT_TRUE(endpoint);
    for (auto header : {std::pair<std::string, std::string>{"X-A", "v\r\nX-Evil: 1"},
                        std::pair<std::string, std::string>{"X A", "v"},
                        std::pair<std::string, std::string>{"", "v"}}) {
        HttpClientRequest request;
        request.headers.push_back(header);
        auto r = http_request(*endpoint, request);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().kind(), ErrorKind::invalid_argument) << header.first;
    }
}

TEST(HttpClientTest, RefusesABadPinBeforeConnecting) {
    auto endpoint = HttpEndpoint::parse("https://127.0.0.1:1");
    ASSERT_TRUE(endpoint);
    endpoint->pinned_sha256 = "AB:CD";
    auto r = http_request(*endpoint, {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind(), ErrorKind::invalid_argument);
}

}  // namespace
}  // namespace vmshadow::net
