// SPDX-License-Identifier: MIT
// The TLS side of HttpServer that needs a hand-made client: an old protocol refused, and a
// client certificate required, its fingerprint reaching the handler.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstdlib>
#include <memory>

#include "net/http_client.h"
#include "net/http_server.h"
#include "net/tls_identity.h"
#include "unit/net/net_test_util.h"

namespace vmshadow::net {
namespace {

HttpResponse peer_echo(const HttpRequest& request) {
    HttpResponse response;
    response.body = request.peer.client_certificate_sha256.value_or("none");
    return response;
}

struct Fixture {
    test::NetTempDir dir;
    TlsIdentity id;
    std::unique_ptr<HttpServer> server;

    explicit Fixture(std::optional<std::filesystem::path> client_ca = {}) {
        auto made = ensure_tls_identity(dir.at("tls"));
        EXPECT_TRUE(made) << (made ? "" : made.error().message());
        if (!made) return;
        id = *made;
        HttpServerOptions options;
        options.idle_timeout = std::chrono::seconds(5);
        TlsListener listener;
        listener.certificate_file = id.certificate_file;
        listener.key_file = id.key_file;
        listener.client_ca_file = std::move(client_ca);
        options.tls.push_back(listener);
        auto started = HttpServer::start(options, peer_echo);
        EXPECT_TRUE(started) << (started ? "" : started.error().message());
        if (started) server = std::move(*started);
    }
};

// A bare OpenSSL client limited to `max_version`: true when the handshake completed.
bool handshake_with_max_version(std::uint16_t port, int max_version, std::string& error) {
    auto fd = test::connect_tcp(port);
    if (!fd) return false;
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                          SSL_CTX_free);
    // Security level 0: OpenSSL 3 would not even offer TLS 1.1 otherwise, and the test must
    // see the server refuse it, not our own library.
    SSL_CTX_set_security_level(ctx.get(), 0);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx.get(), max_version);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
    SSL_set_fd(ssl.get(), fd.get());
    bool ok = SSL_connect(ssl.get()) == 1;
    char text[256] = {};
    ERR_error_string_n(ERR_get_error(), text, sizeof text);
    error = text;
    ERR_clear_error();
    return ok;
}

TEST(TlsServerTest, Tls11ClientIsRefused) {
    Fixture f;
    ASSERT_TRUE(f.server);
    std::string error;
    EXPECT_FALSE(handshake_with_max_version(f.server->tls_port(), TLS1_1_VERSION, error));
    EXPECT_EQ(error.find("no protocols available"), std::string::npos) << error;
    // The same client allowed TLS 1.2 gets in: the refusal was the version.
    EXPECT_TRUE(handshake_with_max_version(f.server->tls_port(), TLS1_2_VERSION, error)) << error;
}

bool run(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

TEST(TlsServerTest, ClientCertificateRequiredAndItsFingerprintReachesThePeer) {
    test::NetTempDir pki;
    std::string d = pki.path.string();
    ASSERT_TRUE(run("cd " + d +
                    " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout ca.key -out ca.crt -subj /CN=test-ca -days 2"));
    ASSERT_TRUE(run("cd " + d +
                    " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout client.key -out client.csr -subj /CN=replica-peer"));
    ASSERT_TRUE(run("cd " + d +
                    " && openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key "
                    "-CAcreateserial -out client.crt -days 2"));
    // A certificate of another CA, which the server must not take.
    ASSERT_TRUE(run("cd " + d +
                    " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout other.key -out other.crt -subj /CN=intruder -days 2"));

    Fixture f(pki.path / "ca.crt");
    ASSERT_TRUE(f.server);
    auto endpoint =
        HttpEndpoint::parse("https://127.0.0.1:" + std::to_string(f.server->tls_port()));
    ASSERT_TRUE(endpoint);
    endpoint->pinned_sha256 = f.id.sha256_fingerprint;

    auto without = http_request(*endpoint, {});
    ASSERT_FALSE(without);
    EXPECT_EQ(without.error().kind(), ErrorKind::permission) << without.error().message();

    endpoint->client_certificate_file = pki.path / "other.crt";
    endpoint->client_key_file = pki.path / "other.key";
    auto intruder = http_request(*endpoint, {});
    ASSERT_FALSE(intruder);
    EXPECT_EQ(intruder.error().kind(), ErrorKind::permission) << intruder.error().message();

    endpoint->client_certificate_file = pki.path / "client.crt";
    endpoint->client_key_file = pki.path / "client.key";
    auto with = http_request(*endpoint, {});
    ASSERT_TRUE(with) << with.error().message();
    EXPECT_EQ(with->status, 200);
    auto expected = certificate_fingerprint(pki.path / "client.crt");
    ASSERT_TRUE(expected);
    EXPECT_EQ(with->body, *expected);
}

TEST(TlsServerTest, NoClientCertificateMeansNoneInThePeer) {
    Fixture f;
    ASSERT_TRUE(f.server);
    auto endpoint = HttpEndpoint::parse("https://[::1]:1");
    ASSERT_TRUE(endpoint);
    endpoint->host = "127.0.0.1";
    endpoint->port = f.server->tls_port();
    endpoint->pinned_sha256 = f.id.sha256_fingerprint;
    auto response = http_request(*endpoint, {});
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->body, "none");
}

}  // namespace
}  // namespace vmshadow::net
