// SPDX-License-Identifier: MIT
// ensure_tls_identity: made once, then the same identity; a key others can read, a missing
// half or a mismatched pair refused with a message naming the file.
#include "net/tls_identity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <regex>

#include "unit/net/net_test_util.h"

namespace vmshadow::net {
namespace {

TEST(TlsIdentityTest, CreatesThenReloadsTheSameFingerprint) {
    test::NetTempDir dir;
    auto first = ensure_tls_identity(dir.at("state"));
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_TRUE(first->created);
    EXPECT_EQ(first->certificate_file, dir.at("state") / "api.crt");
    EXPECT_EQ(first->key_file, dir.at("state") / "api.key");
    EXPECT_TRUE(
        std::regex_match(first->sha256_fingerprint, std::regex("([0-9A-F]{2}:){31}[0-9A-F]{2}")))
        << first->sha256_fingerprint;
    struct stat st {};
    ASSERT_EQ(::stat(first->key_file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    auto second = ensure_tls_identity(dir.at("state"));
    ASSERT_TRUE(second) << second.error().message();
    EXPECT_FALSE(second->created);
    EXPECT_EQ(second->sha256_fingerprint, first->sha256_fingerprint);
    auto direct = certificate_fingerprint(first->certificate_file);
    ASSERT_TRUE(direct);
    EXPECT_EQ(*direct, first->sha256_fingerprint);
}

TEST(TlsIdentityTest, CertificateNamesLocalhostAndLoopbackAddresses) {
    test::NetTempDir dir;
    auto id = ensure_tls_identity(dir.path);
    ASSERT_TRUE(id);
    std::string out = (dir.path / "text").string();
    ASSERT_EQ(std::system(("openssl x509 -noout -text -in " + id->certificate_file.string() +
                           " > " + out + " 2>&1")
                              .c_str()),
              0);
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("DNS:localhost"), std::string::npos) << text;
    EXPECT_NE(text.find("IP Address:127.0.0.1"), std::string::npos);
    EXPECT_NE(text.find("IP Address:0:0:0:0:0:0:0:1"), std::string::npos);
    EXPECT_NE(text.find("prime256v1"), std::string::npos);
}

TEST(TlsIdentityTest, RefusesAKeyOthersCanRead) {
    test::NetTempDir dir;
    auto id = ensure_tls_identity(dir.path);
    ASSERT_TRUE(id);
    ASSERT_EQ(::chmod(id->key_file.c_str(), 0644), 0);
    auto again = ensure_tls_identity(dir.path);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().kind(), ErrorKind::permission);
    EXPECT_NE(again.error().message().find("chmod 600"), std::string::npos)
        << again.error().message();
}

TEST(TlsIdentityTest, RefusesOneFileWithoutTheOther) {
    test::NetTempDir dir;
    auto id = ensure_tls_identity(dir.path);
    ASSERT_TRUE(id);
    std::filesystem::remove(id->key_file);
    auto again = ensure_tls_identity(dir.path);
    ASSERT_FALSE(again);
    EXPECT_NE(again.error().message().find("api.key"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(id->key_file));  // nothing made behind our back
}

TEST(TlsIdentityTest, RefusesAMismatchedOrUnreadablePair) {
    test::NetTempDir dir;
    auto a = ensure_tls_identity(dir.at("a"));
    auto b = ensure_tls_identity(dir.at("b"));
    ASSERT_TRUE(a && b);
    std::filesystem::copy_file(b->key_file, a->key_file,
                               std::filesystem::copy_options::overwrite_existing);
    ::chmod(a->key_file.c_str(), 0600);
    auto mixed = ensure_tls_identity(dir.at("a"));
    ASSERT_FALSE(mixed);
    EXPECT_NE(mixed.error().message().find("is not the key of"), std::string::npos)
        << mixed.error().message();

    { std::ofstream(b->certificate_file) << "not a certificate"; }
    auto garbage = ensure_tls_identity(dir.at("b"));
    ASSERT_FALSE(garbage);
    EXPECT_NE(garbage.error().message().find("api.crt"), std::string::npos);
}

TEST(TlsIdentityTest, FingerprintOfAMissingFileIsNotFound) {
    auto fp = certificate_fingerprint("/nonexistent/vmshadow/api.crt");
    ASSERT_FALSE(fp);
    EXPECT_EQ(fp.error().kind(), ErrorKind::not_found);
}

}  // namespace
}  // namespace vmshadow::net
