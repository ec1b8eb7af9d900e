// SPDX-License-Identifier: MIT
// Mutual TLS as Replica uses it, end to end: the real HttpServer on 127.0.0.1 with a client
// CA, http_request with a CA file and a client certificate, all made by cert_authority.
// Accepted peers reach the handler with their subject; refused ones are named on both sides
// (the server's log line, the client's error).
#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "net/cert_authority.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "unit/net/net_test_util.h"

namespace vmshadow::net {
namespace {

HttpResponse subject_echo(const HttpRequest& request) {
    HttpResponse response;
    response.body = request.peer.client_certificate_subject.value_or("none");
    return response;
}

CertificateRequest host(std::string name, std::vector<std::string> ips = {"127.0.0.1"}) {
    CertificateRequest request;
    request.common_name = std::move(name);
    request.ips = std::move(ips);
    request.days = 2;
    return request;
}

CertificateRequest expired(std::string name) {
    auto request = host(std::move(name));
    request.days = 1;
    request.not_before_offset = -std::chrono::days(10);
    return request;
}

// Two CAs and the host certificates the tests present, made once for the whole suite.
class MutualTls : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        pki_ = new test::NetTempDir();
        auto at = [](const char* name) { return pki_->at(name); };
        CertificateRequest ca;
        ca.common_name = "test CA";
        CertificateRequest other = ca;
        other.common_name = "other CA";
        bool ok =
            create_certificate_authority(at("ca"), ca) &&
            create_certificate_authority(at("other"), other) &&
            issue_host_certificate(at("ca"), at("server"), host("server")) &&
            issue_host_certificate(at("ca"), at("hosta"), host("hosta")) &&
            issue_host_certificate(at("other"), at("intruder"), host("intruder")) &&
            issue_host_certificate(at("ca"), at("stale-client"), expired("stale-client")) &&
            issue_host_certificate(at("ca"), at("stale-server"), expired("stale-server")) &&
            issue_host_certificate(at("ca"), at("elsewhere"), host("elsewhere", {"127.0.0.9"}));
        ASSERT_TRUE(ok);
    }
    static void TearDownTestSuite() {
        delete pki_;
        pki_ = nullptr;
    }

    void TearDown() override {
        if (server_) server_->stop();
    }

    // Serves with <pki>/<identity>/host.crt; a client must chain to <pki>/ca/ca.crt.
    void start(const char* identity, bool require_client = true) {
        HttpServerOptions options;
        options.idle_timeout = std::chrono::seconds(5);
        options.log = [this](std::string_view line) {
            std::lock_guard lock(mutex_);
            log_.emplace_back(line);
        };
        TlsListener listener;
        listener.certificate_file = pki_->at(identity) / "host.crt";
        listener.key_file = pki_->at(identity) / "host.key";
        if (require_client) listener.client_ca_file = pki_->at("ca") / "ca.crt";
        options.tls.push_back(listener);
        auto started = HttpServer::start(options, subject_echo);
        ASSERT_TRUE(started) << started.error().message();
        server_ = std::move(*started);
    }

    // An https endpoint to the server trusting our CA, presenting <pki>/<identity>'s
    // certificate (none when null).
    HttpEndpoint endpoint(const char* identity) {
        auto parsed =
            HttpEndpoint::parse("https://127.0.0.1:" + std::to_string(server_->tls_port()));
        EXPECT_TRUE(parsed);
        HttpEndpoint e = *parsed;
        e.ca_file = pki_->at("ca") / "ca.crt";
        if (identity != nullptr) {
            e.client_certificate_file = pki_->at(identity) / "host.crt";
            e.client_key_file = pki_->at(identity) / "host.key";
        }
        return e;
    }

    Result<HttpResponse> get(const HttpEndpoint& e) {
        HttpClientRequest request;
        request.timeout = std::chrono::seconds(5);
        return http_request(e, request);
    }

    // The server's log line holding `text`, waited for a bounded while (the server logs on
    // its own thread, maybe after the client gave up).
    std::string log_line_with(const std::string& text) {
        for (int i = 0; i < 200; ++i) {
            {
                std::lock_guard lock(mutex_);
                for (const auto& line : log_)
                    if (line.find(text) != std::string::npos) return line;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        std::lock_guard lock(mutex_);
        std::string all;
        for (const auto& line : log_) all += line + "\n";
        ADD_FAILURE() << "no log line with '" << text << "'; the log:\n" << all;
        return {};
    }

    static test::NetTempDir* pki_;
    std::unique_ptr<HttpServer> server_;
    std::mutex mutex_;
    std::vector<std::string> log_;
};

test::NetTempDir* MutualTls::pki_ = nullptr;

TEST_F(MutualTls, ClientWithAGoodCertificateReachesTheHandlerWithItsSubject) {
    start("server");
    auto response = get(endpoint("hosta"));
    ASSERT_TRUE(response) << response.error().message();
    EXPECT_EQ(response->status, 200);
    auto facts = read_certificate(pki_->at("hosta") / "host.crt");
    ASSERT_TRUE(facts);
    EXPECT_EQ(response->body, "CN=hosta");
    EXPECT_EQ(response->body, facts->subject);
}

TEST_F(MutualTls, ClientFromAnotherCaIsRefusedAndTheServerLogNamesIt) {
    start("server");
    auto response = get(endpoint("intruder"));
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission) << response.error().message();
    EXPECT_NE(response.error().message().find("refused our client certificate CN=intruder"),
              std::string::npos)
        << response.error().message();
    std::string line = log_line_with("CN=intruder");
    EXPECT_NE(line.find("127.0.0.1:"), std::string::npos) << line;
    EXPECT_NE(line.find("unable to get local issuer certificate"), std::string::npos) << line;
    EXPECT_NE(line.find("CN=other CA"), std::string::npos) << line;
}

TEST_F(MutualTls, ClientWithAnExpiredCertificateIsRefusedAndTheServerLogSaysSo) {
    start("server");
    auto response = get(endpoint("stale-client"));
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission) << response.error().message();
    std::string line = log_line_with("CN=stale-client");
    EXPECT_NE(line.find("certificate has expired"), std::string::npos) << line;
}

TEST_F(MutualTls, ClientWithoutACertificateIsRefused) {
    start("server");
    auto response = get(endpoint(nullptr));
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission) << response.error().message();
    EXPECT_NE(response.error().message().find("requires a client certificate"), std::string::npos)
        << response.error().message();
    log_line_with("presented no client certificate");
}

TEST_F(MutualTls, ExpiredServerCertificateIsRefusedByTheClientNamingIt) {
    start("stale-server");
    auto response = get(endpoint("hosta"));
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission);
    const auto& message = response.error().message();
    EXPECT_NE(message.find("server certificate CN=stale-server"), std::string::npos) << message;
    EXPECT_NE(message.find("certificate has expired (not after"), std::string::npos) << message;
}

TEST_F(MutualTls, ServerCertificateForAnotherHostIsRefused) {
    start("elsewhere");
    auto response = get(endpoint("hosta"));
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission);
    const auto& message = response.error().message();
    EXPECT_NE(message.find("server certificate CN=elsewhere"), std::string::npos) << message;
    EXPECT_NE(message.find("mismatch"), std::string::npos) << message;
    EXPECT_NE(message.find("IP:127.0.0.9"), std::string::npos) << message;
}

TEST_F(MutualTls, ServerCertificateOfAnotherCaIsRefused) {
    start("intruder", false);
    auto response = get(endpoint(nullptr));
    ASSERT_FALSE(response);
    EXPECT_EQ(response.error().kind(), ErrorKind::permission);
    const auto& message = response.error().message();
    EXPECT_NE(message.find("server certificate CN=intruder"), std::string::npos) << message;
    EXPECT_NE(message.find("CN=other CA"), std::string::npos) << message;
}

}  // namespace
}  // namespace vmshadow::net
