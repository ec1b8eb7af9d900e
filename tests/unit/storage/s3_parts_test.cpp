// SPDX-License-Identifier: MIT
// The pure parts of the S3 backend: locations, credentials, canonical URLs, the retry
// schedule, the token buckets and the parsing of hostile answers.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "storage/s3_answers.h"
#include "storage/s3_blob_store.h"
#include "storage/s3_pacing.h"
#include "storage/s3_url.h"

namespace vmshadow::storage {
namespace {

TEST(S3Location, ParsesHostPortBucketAndPrefix) {
    auto l = parse_s3_location("s3:https://s3.example.com:9000/backups/site-a/vms");
    ASSERT_TRUE(l) << l.error().message();
    EXPECT_EQ(l->endpoint, "https://s3.example.com:9000");
    EXPECT_EQ(l->bucket, "backups");
    EXPECT_EQ(l->prefix, "site-a/vms");
    EXPECT_EQ(l->text(), "s3:https://s3.example.com:9000/backups/site-a/vms");
    auto bare = parse_s3_location("s3:https://s3.amazonaws.com/my-bucket/");
    ASSERT_TRUE(bare);
    EXPECT_EQ(bare->prefix, "");
    EXPECT_EQ(bare->text(), "s3:https://s3.amazonaws.com/my-bucket");
    EXPECT_TRUE(parse_s3_location("s3:http://127.0.0.1:7481/b-1"));
    EXPECT_TRUE(is_s3_location("s3:anything"));
    EXPECT_FALSE(is_s3_location("/srv/repo"));
}

TEST(S3Location, RefusesMalformedLocationsWithAClearMessage) {
    for (std::string bad :
         {"https://h/b", "s3:ftp://h/bucket", "s3:https://h", "s3:https:///bucket",
          "s3:https://h:99999/bucket", "s3:https://h:x/bucket", "s3:https://h/Bucket",
          "s3:https://h/ab", "s3:https://h/bucket/a//b", "s3:https://h/bucket/../x",
          "s3:https://user@h/bucket", "s3:http://example.com/bucket"}) {
        auto l = parse_s3_location(bad);
        ASSERT_FALSE(l) << bad;
        EXPECT_EQ(l.error().kind(), ErrorKind::invalid_argument);
        EXPECT_NE(l.error().message().find("s3:https://HOST"), std::string::npos)
            << l.error().message();
    }
}

TEST(S3Url, CanonicalQueryIsSortedAndEncoded) {
    EXPECT_EQ(canonical_query({{"prefix", "dir/"}, {"list-type", "2"}}),
              "list-type=2&prefix=dir%2F");
    EXPECT_EQ(canonical_query({{"uploads", ""}}), "uploads=");
    EXPECT_EQ(canonical_query({{"uploadId", "a+b/c="}, {"partNumber", "3"}}),
              "partNumber=3&uploadId=a%2Bb%2Fc%3D");
    EXPECT_EQ(uri_encode("a b~_.-Z9/%", true), "a%20b~_.-Z9/%25");
    EXPECT_EQ(uri_encode("a/b", false), "a%2Fb");
}

TEST(S3Url, PathStyleAndVirtualHosted) {
    S3Location l{"https://h:9000", "bkt", "p"};
    EXPECT_EQ(s3_url(l, false, "p/data/a+b"), "https://h:9000/bkt/p/data/a%2Bb");
    EXPECT_EQ(s3_url(l, false, "", {{"list-type", "2"}}), "https://h:9000/bkt?list-type=2");
    EXPECT_EQ(s3_url(l, true, "p/k", {{"uploads", ""}}), "https://bkt.h:9000/p/k?uploads=");
}

TEST(S3Backoff, DoublesFromTheFirstDelayUpToTheCapWithJitterInTheUpperHalf) {
    RetryPolicy p{.max_attempts = 8,
                  .max_total_seconds = 300,
                  .first_delay_seconds = 0.1,
                  .max_delay_seconds = 10};
    EXPECT_DOUBLE_EQ(backoff_delay(p, 1, 1.0), 0.1);
    EXPECT_DOUBLE_EQ(backoff_delay(p, 1, 0.0), 0.05);
    EXPECT_DOUBLE_EQ(backoff_delay(p, 2, 1.0), 0.2);
    EXPECT_DOUBLE_EQ(backoff_delay(p, 4, 1.0), 0.8);
    EXPECT_DOUBLE_EQ(backoff_delay(p, 20, 1.0), 10);
    EXPECT_DOUBLE_EQ(backoff_delay(p, 1000, 0.0), 5);
}

TEST(S3Backoff, StopsAtTheAttemptCountOrTheTotalTime) {
    RetryPolicy p{.max_attempts = 3, .max_total_seconds = 300};
    EXPECT_TRUE(next_retry_delay(p, 1, 0, 0.5));
    EXPECT_TRUE(next_retry_delay(p, 2, 0, 0.5));
    EXPECT_FALSE(next_retry_delay(p, 3, 0, 0.5)) << "3 attempts: 2 retries";
    RetryPolicy short_time{.max_attempts = 100, .max_total_seconds = 1};
    double slept = 0;
    int retries = 0;
    while (auto d = next_retry_delay(short_time, retries + 1, slept, 1.0)) {
        slept += *d;
        ++retries;
    }
    EXPECT_LE(slept, 1.0);
    EXPECT_EQ(retries, 3);  // 0.1 + 0.2 + 0.4; 0.8 more would pass 1 s
}

TEST(TokenBucket, SpendsTheBurstThenPacesAtTheRate) {
    TokenBucket bucket(10, 2);  // 10 a second, 2 saved up
    EXPECT_EQ(bucket.reserve(1, 100.0), 0);
    EXPECT_EQ(bucket.reserve(1, 100.0), 0);
    EXPECT_DOUBLE_EQ(bucket.reserve(1, 100.0), 0.1);
    EXPECT_DOUBLE_EQ(bucket.reserve(1, 100.0), 0.2);   // queued behind the previous one
    EXPECT_NEAR(bucket.reserve(1, 100.4), 0.0, 1e-9);  // the debt is paid by then
}

TEST(TokenBucket, NeverSavesMoreThanTheBurstAndIgnoresAClockGoingBack) {
    TokenBucket bucket(100, 10);
    EXPECT_EQ(bucket.reserve(10, 0.0), 0);
    EXPECT_EQ(bucket.reserve(0, 1000.0), 0);            // idle for long: back to 10, not more
    EXPECT_DOUBLE_EQ(bucket.reserve(20, 1000.0), 0.1);  // 10 of debt at 100/s
    EXPECT_GT(bucket.reserve(1, 999.0), 0.1);           // the clock went back: no refill
}

std::string page(const std::string& contents, bool truncated, const std::string& token = "") {
    return "<?xml version=\"1.0\"?><ListBucketResult "
           "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>" +
           contents + "<IsTruncated>" + (truncated ? "true" : "false") + "</IsTruncated>" +
           (token.empty() ? "" : "<NextContinuationToken>" + token + "</NextContinuationToken>") +
           "</ListBucketResult>";
}
std::string entry(const std::string& key, const std::string& size = "12",
                  const std::string& time = "2026-12-07T11:50:00.000Z") {
    return "<Contents><Key>" + key + "</Key><LastModified>" + time + "</LastModified><Size>" +
           size + "</Size></Contents>";
}

TEST(S3Answers, ParsesAListPageCuttingTheStorePrefix) {
    auto p = parse_list_page(page(entry("pre/index/a") + entry("pre/index/b", "7"), true, "tok+/="),
                             "pre/", "index/", "");
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_EQ(p->objects.size(), 2u);
    EXPECT_EQ(p->objects[0].key, "index/a");
    EXPECT_EQ(p->objects[1].size, 7u);
    EXPECT_EQ(p->objects[0].modified, 1796644200);
    EXPECT_TRUE(p->truncated);
    EXPECT_EQ(p->next_token, "tok+/=");
    EXPECT_EQ(p->last_key, "pre/index/b");
}

TEST(S3Answers, HostileListPagesAreCorruptionNotCrashes) {
    struct Case {
        std::string body;
        std::string after;
    };
    std::vector<Case> cases = {
        {page(entry("other/x"), false), ""},                           // outside the prefix
        {page(entry("pre/b") + entry("pre/a"), false), ""},            // out of order
        {page(entry("pre/a"), false), "pre/z"},                        // before the last page
        {page(entry("pre/a", "-1"), false), ""},                       // negative size
        {page(entry("pre/a", "99999999999999999999999"), false), ""},  // size overflow
        {page(entry("pre/a", "12", "yesterday"), false), ""},          // bad time
        {page(entry("pre/a"), true), ""},                              // truncated, no token
        {page("", true, "t"), ""},                                     // truncated, no key
        {page(entry("pre/a"), false).substr(0, 120), ""},              // cut off
        {"<Error><Code>x</Code></Error>", ""},                         // wrong root
        {"", ""},                                                      // nothing
        {std::string(kMaxListAnswerBytes + 1, ' '), ""},               // huge
        {"<!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>"
         "<ListBucketResult><Contents><Key>pre/&b;</Key></Contents></ListBucketResult>",
         ""},  // entities are not expanded: no billion laughs
    };
    std::string many;
    for (int i = 0; i < kMaxKeysPerPage + 1; ++i) {
        char key[32];
        std::snprintf(key, sizeof key, "pre/%06d", i);
        many += entry(key);
    }
    cases.push_back({page(many, false), ""});  // more keys than a page may hold
    for (const auto& c : cases) {
        auto p = parse_list_page(c.body, "pre/", "", c.after);
        ASSERT_FALSE(p) << c.body.substr(0, 200);
        EXPECT_EQ(p.error().kind(), ErrorKind::corruption);
        EXPECT_NE(p.error().message().find("the gateway's answer"), std::string::npos);
    }
}

TEST(S3Answers, KeysThatAreNoStorageKeysAreSkippedAndNamed) {
    auto p = parse_list_page(page(entry("pre/a//b") + entry("pre/ok"), false), "pre/", "", "");
    ASSERT_TRUE(p) << p.error().message();
    ASSERT_EQ(p->objects.size(), 1u);
    EXPECT_EQ(p->objects[0].key, "ok");
    EXPECT_EQ(p->skipped, std::vector<std::string>{"pre/a//b"});
}

TEST(S3Answers, ErrorUploadIdAndCompleteAnswers) {
    auto e = parse_error_answer(
        "<Error><Code>SlowDown</Code><Message>Please\x1b[31m slow</Message></Error>");
    EXPECT_EQ(e.code, "SlowDown");
    EXPECT_EQ(e.message, "Please [31m slow") << "control bytes are blanked";
    EXPECT_EQ(parse_error_answer("garbage").code, "");
    auto id = parse_upload_id(
        "<InitiateMultipartUploadResult><Bucket>b</Bucket><UploadId>2~abc</UploadId>"
        "</InitiateMultipartUploadResult>");
    ASSERT_TRUE(id);
    EXPECT_EQ(*id, "2~abc");
    EXPECT_FALSE(parse_upload_id("<InitiateMultipartUploadResult/>"));
    EXPECT_FALSE(parse_upload_id(
        "<InitiateMultipartUploadResult><UploadId>a b</UploadId></InitiateMultipartUploadResult>"));
    EXPECT_TRUE(
        check_complete_answer("<CompleteMultipartUploadResult><ETag>x</ETag>"
                              "</CompleteMultipartUploadResult>"));
    auto late_error = check_complete_answer("<Error><Code>InternalError</Code></Error>");
    ASSERT_FALSE(late_error);
    EXPECT_EQ(late_error.error().kind(), ErrorKind::corruption);
}

TEST(S3Answers, Iso8601Times) {
    EXPECT_EQ(parse_iso8601_utc("1970-01-01T00:00:00Z"), 0);
    EXPECT_EQ(parse_iso8601_utc("2026-12-07T11:50:00.000Z"), 1796644200);
    EXPECT_FALSE(parse_iso8601_utc("2026-13-07T11:50:00.000Z"));
    EXPECT_FALSE(parse_iso8601_utc("2026-12-07 11:50:00Z"));
    EXPECT_FALSE(parse_iso8601_utc("2026-12-07T11:50:00.Z"));
    EXPECT_FALSE(parse_iso8601_utc("2026-12-07T11:50:00+01:00"));
}

class S3CredentialsFile : public ::testing::Test {
  protected:
    void SetUp() override {
        for (const char* v : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                              "AWS_REGION", "AWS_SESSION_TOKEN"}) {
            if (const char* old = std::getenv(v)) saved_.emplace_back(v, old);
            ::unsetenv(v);
        }
        file_ = (std::filesystem::temp_directory_path() /
                 ("vmshadow-s3cred-" + std::to_string(::getpid()) + ".toml"))
                    .string();
    }
    void TearDown() override {
        std::filesystem::remove(file_);
        ::unsetenv("AWS_ACCESS_KEY_ID");
        ::unsetenv("AWS_SECRET_ACCESS_KEY");
        for (auto& [name, value] : saved_) ::setenv(name.c_str(), value.c_str(), 1);
    }
    void write(const std::string& text, mode_t mode) {
        std::ofstream(file_) << text;
        ::chmod(file_.c_str(), mode);
    }
    std::vector<std::pair<std::string, std::string>> saved_;
    std::string file_;
};

TEST_F(S3CredentialsFile, TheEnvironmentComesFirst) {
    ::setenv("AWS_ACCESS_KEY_ID", "AK", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "SK", 1);
    auto c = load_s3_credentials("/nonexistent");
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->access_key_id, "AK");
    EXPECT_EQ(c->region, "us-east-1");
}

TEST_F(S3CredentialsFile, AFileOnlyItsOwnerReads) {
    write("access_key_id = \"AK2\"\nsecret_access_key = \"SK2\"\nregion = \"eu-west-1\"\n", 0600);
    auto c = load_s3_credentials(file_);
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->access_key_id, "AK2");
    EXPECT_EQ(c->secret_access_key, "SK2");
    EXPECT_EQ(c->region, "eu-west-1");
    write("access_key_id = \"AK2\"\nsecret_access_key = \"SK2\"\n", 0644);
    auto open = load_s3_credentials(file_);
    ASSERT_FALSE(open);
    EXPECT_EQ(open.error().kind(), ErrorKind::permission);
    EXPECT_NE(open.error().message().find("chmod 600"), std::string::npos);
}

TEST_F(S3CredentialsFile, MissingOrBrokenCredentialsSayWhat) {
    auto none = load_s3_credentials("");
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().kind(), ErrorKind::not_found);
    EXPECT_NE(none.error().message().find("AWS_ACCESS_KEY_ID"), std::string::npos);
    write("access_key_id = \"AK\"\n", 0600);
    EXPECT_EQ(load_s3_credentials(file_).error().kind(), ErrorKind::invalid_argument);
    write("access_key_id = [unclosed\n", 0600);
    auto broken = load_s3_credentials(file_);
    ASSERT_FALSE(broken);
    EXPECT_EQ(broken.error().kind(), ErrorKind::invalid_argument);
    EXPECT_NE(broken.error().message().find(file_), std::string::npos);
}

}  // namespace
}  // namespace vmshadow::storage
