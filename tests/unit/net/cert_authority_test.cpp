// SPDX-License-Identifier: MIT
// net/cert_authority.h: a CA and host certificates made through OpenSSL's API, their facts
// read back, verification (good, expired, another CA), and no file ever overwritten.
#include "net/cert_authority.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "unit/net/net_test_util.h"

namespace vmshadow::net {
namespace {

CertificateRequest named(std::string name) {
    CertificateRequest request;
    request.common_name = std::move(name);
    return request;
}

// A CA outlives the host certificates it issues (825 days by default).
CertificateRequest ca_named(std::string name) {
    auto request = named(std::move(name));
    request.days = 3650;
    return request;
}

std::string content(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

mode_t mode_of(const std::filesystem::path& file) {
    struct stat st {};
    ::stat(file.c_str(), &st);
    return st.st_mode & 07777;
}

TEST(CertAuthorityTest, HostCertificateFromTheCaHasItsFactsAndVerifies) {
    test::NetTempDir dir;
    ASSERT_TRUE(create_certificate_authority(dir.at("ca"), ca_named("vmshadow CA lab")));
    EXPECT_EQ(mode_of(dir.at("ca")), 0700u);
    EXPECT_EQ(mode_of(dir.at("ca") / "ca.key"), 0600u);
    EXPECT_EQ(mode_of(dir.at("ca") / "ca.crt"), 0644u);

    auto request = named("hostb");
    request.dns = {"hostb.example"};
    request.ips = {"127.0.0.2", "::1"};
    request.days = 30;
    auto issued = issue_host_certificate(dir.at("ca"), dir.at("hostb"), request);
    ASSERT_TRUE(issued) << issued.error().message();
    EXPECT_EQ(mode_of(dir.at("hostb") / "host.key"), 0600u);
    EXPECT_EQ(content(dir.at("hostb") / "ca.crt"), content(dir.at("ca") / "ca.crt"));

    auto ca = read_certificate(dir.at("ca") / "ca.crt");
    ASSERT_TRUE(ca) << ca.error().message();
    EXPECT_TRUE(ca->is_ca);
    EXPECT_EQ(ca->subject, "CN=vmshadow CA lab");

    auto facts = read_certificate(dir.at("hostb") / "host.crt");
    ASSERT_TRUE(facts) << facts.error().message();
    EXPECT_FALSE(facts->is_ca);
    EXPECT_EQ(facts->subject, "CN=hostb");
    EXPECT_EQ(facts->issuer, "CN=vmshadow CA lab");
    EXPECT_EQ(facts->dns, (std::vector<std::string>{"hostb", "hostb.example"}));
    EXPECT_EQ(facts->ips, (std::vector<std::string>{"127.0.0.2", "::1"}));
    EXPECT_EQ(facts->sha256.size(), 95u);
    EXPECT_LT(facts->not_before, facts->not_after);
    EXPECT_EQ(facts->not_after.back(), 'Z');

    auto verified = verify_certificate(dir.at("hostb") / "host.crt", dir.at("ca") / "ca.crt");
    EXPECT_TRUE(verified) << verified.error().message();
}

TEST(CertAuthorityTest, ExpiredCertificateIsRefusedNamingItAndWhen) {
    test::NetTempDir dir;
    ASSERT_TRUE(create_certificate_authority(dir.at("ca"), ca_named("ca")));
    auto request = named("old-host");
    request.days = 1;
    request.not_before_offset = -std::chrono::days(10);
    ASSERT_TRUE(issue_host_certificate(dir.at("ca"), dir.at("old"), request));
    auto verified = verify_certificate(dir.at("old") / "host.crt", dir.at("ca") / "ca.crt");
    ASSERT_FALSE(verified);
    EXPECT_EQ(verified.error().kind(), ErrorKind::permission);
    const auto& message = verified.error().message();
    EXPECT_NE(message.find("CN=old-host"), std::string::npos) << message;
    EXPECT_NE(message.find("expired"), std::string::npos) << message;
    EXPECT_NE(message.find("not after"), std::string::npos) << message;
}

TEST(CertAuthorityTest, CertificateOfAnotherCaIsRefused) {
    test::NetTempDir dir;
    ASSERT_TRUE(create_certificate_authority(dir.at("ca"), ca_named("ours")));
    ASSERT_TRUE(create_certificate_authority(dir.at("other"), ca_named("theirs")));
    ASSERT_TRUE(issue_host_certificate(dir.at("other"), dir.at("intruder"), named("intruder")));
    auto verified = verify_certificate(dir.at("intruder") / "host.crt", dir.at("ca") / "ca.crt");
    ASSERT_FALSE(verified);
    EXPECT_EQ(verified.error().kind(), ErrorKind::permission);
    EXPECT_NE(verified.error().message().find("CN=intruder"), std::string::npos)
        << verified.error().message();
    EXPECT_NE(verified.error().message().find("CN=theirs"), std::string::npos)
        << verified.error().message();
}

TEST(CertAuthorityTest, ExistingFilesAreNeverOverwritten) {
    test::NetTempDir dir;
    ASSERT_TRUE(create_certificate_authority(dir.at("ca"), ca_named("ca")));
    std::string before = content(dir.at("ca") / "ca.key");
    auto again = create_certificate_authority(dir.at("ca"), ca_named("ca"));
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::conflict);
    EXPECT_NE(again.error().message().find("ca.crt"), std::string::npos) << again.error().message();
    EXPECT_EQ(content(dir.at("ca") / "ca.key"), before);

    ASSERT_TRUE(issue_host_certificate(dir.at("ca"), dir.at("h"), named("h")));
    // A host certificate may not outlive its CA.
    auto too_long = named("h3");
    too_long.days = 3651;
    auto outlived = issue_host_certificate(dir.at("ca"), dir.at("h3"), too_long);
    ASSERT_FALSE(outlived);
    EXPECT_NE(outlived.error().message().find("outlives the CA"), std::string::npos);
    std::string host_key = content(dir.at("h") / "host.key");
    auto reissued = issue_host_certificate(dir.at("ca"), dir.at("h"), named("h"));
    ASSERT_FALSE(reissued);
    EXPECT_EQ(reissued.error().kind(), ErrorKind::conflict);
    EXPECT_NE(reissued.error().message().find("host.crt"), std::string::npos);
    EXPECT_EQ(content(dir.at("h") / "host.key"), host_key);

    // Another CA's certificate where ours would go is not replaced either.
    ASSERT_TRUE(create_certificate_authority(dir.at("other"), ca_named("other")));
    std::filesystem::create_directories(dir.at("h2"));
    std::filesystem::copy_file(dir.at("other") / "ca.crt", dir.at("h2") / "ca.crt");
    auto mixed = issue_host_certificate(dir.at("ca"), dir.at("h2"), named("h2"));
    ASSERT_FALSE(mixed);
    EXPECT_NE(mixed.error().message().find("ca.crt"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(dir.at("h2") / "host.key"));
}

TEST(CertAuthorityTest, BadRequestsAreRefusedBeforeAnythingIsWritten) {
    test::NetTempDir dir;
    EXPECT_FALSE(create_certificate_authority(dir.at("ca"), named("")));
    auto no_days = named("ca");
    no_days.days = 0;
    EXPECT_FALSE(create_certificate_authority(dir.at("ca"), no_days));
    no_days.days = 36501;
    EXPECT_FALSE(create_certificate_authority(dir.at("ca"), no_days));
    EXPECT_FALSE(create_certificate_authority(dir.at("ca"), ca_named("a,CN=b")));
    EXPECT_FALSE(std::filesystem::exists(dir.at("ca")));

    ASSERT_TRUE(create_certificate_authority(dir.at("ca"), ca_named("ca")));
    auto bad_ip = named("h");
    bad_ip.ips = {"300.1.1.1"};
    auto refused = issue_host_certificate(dir.at("ca"), dir.at("h"), bad_ip);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().kind(), ErrorKind::invalid_argument);
    EXPECT_NE(refused.error().message().find("300.1.1.1"), std::string::npos);
    EXPECT_FALSE(issue_host_certificate(dir.at("ca"), dir.at("h"), named("host with space")));
    auto bad_dns = named("h");
    bad_dns.dns = {"x,IP:1.2.3.4"};
    EXPECT_FALSE(issue_host_certificate(dir.at("ca"), dir.at("h"), bad_dns));
    EXPECT_FALSE(std::filesystem::exists(dir.at("h")));
}

TEST(CertAuthorityTest, AnIpAsTheNameIsAnIpEntry) {
    test::NetTempDir dir;
    ASSERT_TRUE(create_certificate_authority(dir.at("ca"), ca_named("ca")));
    ASSERT_TRUE(issue_host_certificate(dir.at("ca"), dir.at("h"), named("127.0.0.3")));
    auto facts = read_certificate(dir.at("h") / "host.crt");
    ASSERT_TRUE(facts);
    EXPECT_EQ(facts->ips, (std::vector<std::string>{"127.0.0.3"}));
    EXPECT_TRUE(facts->dns.empty());
}

}  // namespace
}  // namespace vmshadow::net
