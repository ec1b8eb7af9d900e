// SPDX-License-Identifier: MIT
// The primary's protocol client against a real HttpServer with mutual TLS (certificates from
// cert_authority): answers mapped to results, the replica's words (resync required, refused
// subject) and an untrusted peer named in the error.
#include "replica/replica_client.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "net/cert_authority.h"
#include "net/http_server.h"
#include "replica/cycle_format.h"
#include "replica/replica_protocol.h"

namespace vmshadow::replica {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

net::CertificateRequest host(std::string name) {
    net::CertificateRequest request;
    request.common_name = std::move(name);
    request.ips = {"127.0.0.1"};
    request.days = 2;
    return request;
}

class ReplicaClientTls : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        std::string pattern = (fs::temp_directory_path() / "vmshadow-rclient-XXXXXX").string();
        dir_ = new fs::path(::mkdtemp(pattern.data()));
        net::CertificateRequest ca;
        ca.common_name = "test CA";
        net::CertificateRequest other = ca;
        other.common_name = "other CA";
        bool ok =
            net::create_certificate_authority(*dir_ / "ca", ca) &&
            net::create_certificate_authority(*dir_ / "other", other) &&
            net::issue_host_certificate(*dir_ / "ca", *dir_ / "hostb", host("hostb")) &&
            net::issue_host_certificate(*dir_ / "ca", *dir_ / "hosta", host("hosta")) &&
            net::issue_host_certificate(*dir_ / "other", *dir_ / "intruder", host("intruder"));
        ASSERT_TRUE(ok);
    }
    static void TearDownTestSuite() {
        std::error_code ec;
        fs::remove_all(*dir_, ec);
        delete dir_;
    }
    void TearDown() override {
        if (server_) server_->stop();
    }

    void start() {
        net::HttpServerOptions options;
        options.idle_timeout = std::chrono::seconds(5);
        options.max_body_bytes = kMaxChunkBytes;
        net::TlsListener listener;
        listener.address = "127.0.0.1";
        listener.certificate_file = *dir_ / "hostb" / "host.crt";
        listener.key_file = *dir_ / "hostb" / "host.key";
        listener.client_ca_file = *dir_ / "ca" / "ca.crt";
        options.tls.push_back(listener);
        auto server =
            net::HttpServer::start(options, [](const net::HttpRequest& r) { return answer(r); });
        ASSERT_TRUE(server) << server.error().message();
        server_ = std::move(*server);
        peer_ = "127.0.0.1:" + std::to_string(server_->tls_port());
    }

    // A replica host in a few lines: enough of the protocol for the client's mapping.
    static net::HttpResponse answer(const net::HttpRequest& r) {
        net::HttpResponse out;
        const std::string base = std::string(kPrefix) + "/vms/" + kUuid;
        std::string subject = r.peer.client_certificate_subject.value_or("");
        if (r.path == std::string(kPrefix) + "/hello") {
            out.body = json{{"version", 1}, {"subject", "CN=hostb"}, {"peer", subject}}.dump();
        } else if (r.path == base && r.method == "GET") {
            out.status = 404;
            out.body = R"({"error": "no VM 6f1c..."})";
        } else if (r.path == base + "/cycles") {
            out.status = 409;
            out.body =
                R"({"error": "resync required: the latest point is t7", "resync_required": true})";
        } else if (r.path == base + "/hashes") {
            auto q = json::parse(r.body);
            out.content_type = "application/octet-stream";
            out.body.assign(q["count"].get<std::size_t>() * 32, '\x5a');
        } else if (r.path == base + "/failover") {
            out.status = 403;
            out.body = R"({"error": "subject CN=hosta is not allowed here"})";
        } else {
            out.status = 400;
            out.body = R"({"error": "bad request"})";
        }
        return out;
    }

    ReplicaTls tls(const char* who) const {
        return {*dir_ / who / "host.crt", *dir_ / who / "host.key", *dir_ / who / "ca.crt"};
    }

    static constexpr const char* kUuid = "6f1c2a4e-0b7d-4c1e-9a53-1f2e3d4c5b6a";
    static fs::path* dir_;
    std::unique_ptr<net::HttpServer> server_;
    std::string peer_;
};

fs::path* ReplicaClientTls::dir_ = nullptr;

TEST_F(ReplicaClientTls, HelloReachesTheReplicaWithThisHostsSubject) {
    start();
    auto client = connect_replica(peer_, tls("hosta"));
    ASSERT_TRUE(client) << client.error().message();
    auto hello = (*client)->hello();
    ASSERT_TRUE(hello) << hello.error().message();
    EXPECT_EQ((*hello)["peer"], "CN=hosta");
    EXPECT_EQ((*hello)["version"], kProtocolVersion);
}

TEST_F(ReplicaClientTls, UntrustedPeerIsAPermissionErrorNamingIt) {
    start();
    auto client = connect_replica(peer_, tls("intruder"));
    ASSERT_TRUE(client);
    auto hello = (*client)->hello();
    ASSERT_FALSE(hello);
    EXPECT_EQ(hello.error().kind(), ErrorKind::permission);
    EXPECT_NE(hello.error().message().find("replica host " + peer_), std::string::npos)
        << hello.error().message();
}

TEST_F(ReplicaClientTls, ReplicaAnswersBecomeResults) {
    start();
    auto client = connect_replica(peer_, tls("hosta"));
    ASSERT_TRUE(client);
    auto state = (*client)->vm_state(kUuid);
    ASSERT_FALSE(state);
    EXPECT_EQ(state.error().kind(), ErrorKind::not_found);

    auto begun = (*client)->begin_cycle(kUuid, json{{"id", "ab"}});
    ASSERT_TRUE(begun) << begun.error().message();
    EXPECT_TRUE(begun->resync_required);
    EXPECT_NE(begun->message.find("t7"), std::string::npos);

    auto hashes = (*client)->hashes(kUuid, "vda", kResyncBlockBytes, 0, 1000);
    ASSERT_TRUE(hashes) << hashes.error().message();
    ASSERT_EQ(hashes->size(), 1000u);
    EXPECT_EQ((*hashes)[999][31], std::byte{0x5a});

    auto refused = (*client)->failover(kUuid, json{{"planned", true}});
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::permission);
    EXPECT_NE(refused.error().message().find("[[replica.allow]]"), std::string::npos);
}

TEST(ReplicaClient, PeerThatIsNotHostPortIsRefused) {
    ReplicaTls tls{"/c", "/k", "/a"};
    EXPECT_EQ(connect_replica("https://x:1/", tls).error().kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(connect_replica("", tls).error().kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(connect_replica("x:1", ReplicaTls{}).error().kind(), ErrorKind::unavailable);
}

}  // namespace
}  // namespace vmshadow::replica
