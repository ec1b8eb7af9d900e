// SPDX-License-Identifier: MIT
// The S3 store against a fake gateway that answers what a real one rarely does: retries and
// their log lines, giving up, resets, 4xx not retried, checksums, short and overlong ranges,
// hostile listings, the request-rate cap, the bucket check.
#include "storage/s3_blob_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>

#include "fake_s3_server.h"

namespace vmshadow::storage {
namespace {

using testing::FakeRequest;
using testing::FakeS3Server;
using testing::http_answer;

struct Logged {
    std::mutex mutex;
    std::vector<std::string> lines;
    std::function<void(const std::string&)> sink() {
        return [this](const std::string& line) {
            std::lock_guard lock(mutex);
            lines.push_back(line);
        };
    }
    std::size_t count(const std::string& needle) {
        std::lock_guard lock(mutex);
        std::size_t n = 0;
        for (auto& l : lines) n += l.find(needle) != std::string::npos;
        return n;
    }
};

S3Options quick_options(Logged& logged) {
    S3Options options;
    options.max_attempts = 4;
    options.max_retry_seconds = 5;
    options.connections = 4;
    options.log = logged.sink();
    return options;
}

Result<std::unique_ptr<BlobStore>> open_fake(FakeS3Server& server, const S3Options& options) {
    auto location = parse_s3_location("s3:" + server.endpoint() + "/bucket/pre");
    if (!location) return fail(location.error());
    S3Credentials credentials{"AK", "SK"};
    return open_s3_blob_store(*location, credentials, options);
}

bool is_bucket_check(const FakeRequest& r) {
    return r.method == "HEAD" && r.target == "/bucket";
}

const std::string kSlowDown =
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

TEST(S3BlobStore, RetriesA503AndLogsEachRetry) {
    std::atomic<int> gets{0};
    FakeS3Server server([&](const FakeRequest& r) {
        if (is_bucket_check(r)) return http_answer(200, "");
        if (++gets <= 2) return http_answer(503, kSlowDown);
        return http_answer(200, "hello");
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store) << store.error().message();
    auto got = (*store)->get("data/ab");
    ASSERT_TRUE(got) << got.error().message();
    EXPECT_EQ(std::string(got->begin(), got->end()), "hello");
    EXPECT_EQ(logged.count("s3: GET data/ab: 503 SlowDown"), 2u);
    EXPECT_EQ(logged.count("retry 1 of 3 in"), 1u);
    EXPECT_EQ(logged.count("retry 2 of 3 in"), 1u);
}

TEST(S3BlobStore, GivesUpAfterTheLastAttemptNamingTheKeyAndTheError) {
    FakeS3Server server([&](const FakeRequest& r) {
        return is_bucket_check(r) ? http_answer(200, "") : http_answer(503, kSlowDown);
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    auto got = (*store)->put("index/x", {});
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().kind(), ErrorKind::unavailable);
    EXPECT_NE(got.error().message().find("/bucket/pre: index/x: PUT: 503 SlowDown"),
              std::string::npos)
        << got.error().message();
    EXPECT_NE(got.error().message().find("gave up after 4 attempts"), std::string::npos);
    EXPECT_EQ(server.requests().size(), 5u);  // the bucket check and 4 attempts
}

TEST(S3BlobStore, AConnectionDroppedWithoutAnAnswerIsRetried) {
    std::atomic<int> heads{0};
    FakeS3Server server([&](const FakeRequest& r) -> std::string {
        if (is_bucket_check(r)) return http_answer(200, "");
        // libcurl itself retries once when a reused connection dies: drop twice.
        if (++heads <= 2) return "";
        return http_answer(
            200, "", "Content-Length: 42\r\nLast-Modified: Mon, 07 Dec 2026 11:50:00 GMT\r\n");
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    auto info = (*store)->stat("k");
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_GE(logged.count("s3: HEAD k:"), 1u);
    EXPECT_EQ(info->size, 42u);
    EXPECT_EQ(info->modified, 1796644200);
}

TEST(S3BlobStore, ClientErrorsAreNotRetriedAndKeepTheirKind) {
    FakeS3Server server([&](const FakeRequest& r) {
        if (is_bucket_check(r)) return http_answer(200, "");
        return http_answer(403, "<Error><Code>AccessDenied</Code><Message>no</Message></Error>");
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    auto got = (*store)->get("k");
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().kind(), ErrorKind::permission);
    EXPECT_NE(got.error().message().find("403 AccessDenied"), std::string::npos);
    EXPECT_EQ(server.requests().size(), 2u);
    EXPECT_TRUE(logged.lines.empty());
}

TEST(S3BlobStore, AWholeGetWhoseChecksumDiffersIsCorruption) {
    FakeS3Server server([&](const FakeRequest& r) {
        if (is_bucket_check(r)) return http_answer(200, "");
        return http_answer(200, "tampered", "x-amz-meta-sha256: " + std::string(64, '0') + "\r\n");
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    auto got = (*store)->get("k");
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().kind(), ErrorKind::corruption);
    EXPECT_NE(got.error().message().find("SHA-256"), std::string::npos);
}

TEST(S3BlobStore, RangeAnswersThatAreShortOverlongOrElsewhereAreCorruption) {
    std::string answer;
    FakeS3Server server(
        [&](const FakeRequest& r) { return is_bucket_check(r) ? http_answer(200, "") : answer; });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    std::vector<std::uint8_t> out(10);
    for (const auto& bad :
         {http_answer(206, "12345", "Content-Range: bytes 100-104/105\r\n"),         // short
          http_answer(206, "123456789012", "Content-Range: bytes 100-111/200\r\n"),  // overlong
          http_answer(206, "1234567890", "Content-Range: bytes 0-9/200\r\n"),        // elsewhere
          http_answer(206, "1234567890", ""),                                        // no range
          http_answer(200, "1234567890"),  // the whole object, but we asked from 100
          http_answer(416, "<Error><Code>InvalidRange</Code></Error>")}) {
        answer = bad;
        auto read = (*store)->read_at("k", 100, out);
        ASSERT_FALSE(read) << bad;
        EXPECT_EQ(read.error().kind(), ErrorKind::corruption) << read.error().message();
    }
    answer = http_answer(206, "abcdefghij", "Content-Range: bytes 100-109/200\r\n");
    ASSERT_TRUE((*store)->read_at("k", 100, out));
    EXPECT_EQ(std::string(out.begin(), out.end()), "abcdefghij");
}

TEST(S3BlobStore, AHostileListingIsCorruptionNamingTheStore) {
    FakeS3Server server([&](const FakeRequest& r) {
        if (is_bucket_check(r)) return http_answer(200, "");
        return http_answer(200,
                           "<ListBucketResult><Contents><Key>elsewhere/x</Key>"
                           "<Size>1</Size></Contents><IsTruncated>false</IsTruncated>"
                           "</ListBucketResult>");
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    auto listed = (*store)->list("index/");
    ASSERT_FALSE(listed);
    EXPECT_EQ(listed.error().kind(), ErrorKind::corruption);
    EXPECT_NE(listed.error().message().find("not under 'pre/index/'"), std::string::npos)
        << listed.error().message();
    auto request = server.requests().back();
    EXPECT_EQ(request.target, "/bucket?list-type=2&max-keys=1000&prefix=pre%2Findex%2F");
}

TEST(S3BlobStore, TheRequestRateCapSpacesRequests) {
    FakeS3Server server([&](const FakeRequest& r) {
        return http_answer(200, "", is_bucket_check(r) ? "" : "Content-Length: 1\r\n");
    });
    Logged logged;
    auto options = quick_options(logged);
    options.requests_per_second = 20;  // a burst of 2, then one every 50 ms
    auto store = open_fake(server, options);
    ASSERT_TRUE(store);
    auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 8; ++i) (void)(*store)->stat("k");
        });
    for (auto& t : threads) t.join();
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // 33 requests with the bucket check: at least (33 - 2) / 20 s.
    EXPECT_GE(elapsed, 31.0 / 20 - 0.05);
    EXPECT_LT(elapsed, 5.0);
}

TEST(S3BlobStore, AMissingBucketIsNamedOrCreated) {
    std::atomic<bool> created{false};
    FakeS3Server server([&](const FakeRequest& r) {
        if (r.method == "PUT" && r.target == "/bucket") {
            created = true;
            return http_answer(200, "");
        }
        if (is_bucket_check(r)) return http_answer(created ? 200 : 404, "");
        return http_answer(500, "");
    });
    Logged logged;
    auto options = quick_options(logged);
    auto missing = open_fake(server, options);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().kind(), ErrorKind::not_found);
    EXPECT_NE(missing.error().message().find("repo init"), std::string::npos);
    options.create_bucket = true;
    auto made = open_fake(server, options);
    ASSERT_TRUE(made) << made.error().message();
    EXPECT_TRUE(created);
}

TEST(S3BlobStore, EveryRequestCarriesTheBodyHashAndPutsCarryTheChecksum) {
    FakeS3Server server([&](const FakeRequest& r) {
        return http_answer(200, "", is_bucket_check(r) ? "" : "ETag: \"e\"\r\n");
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    std::string text = "abc";
    ASSERT_TRUE((*store)->put("k", {reinterpret_cast<const std::uint8_t*>(text.data()), 3}));
    auto put = server.requests().back();
    EXPECT_EQ(put.method, "PUT");
    EXPECT_EQ(put.target, "/bucket/pre/k");
    const std::string abc_sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    EXPECT_NE(put.headers.find("x-amz-content-sha256: " + abc_sha), std::string::npos);
    EXPECT_NE(put.headers.find("x-amz-meta-sha256: " + abc_sha), std::string::npos);
    EXPECT_NE(put.headers.find("authorization: aws4-hmac-sha256"), std::string::npos);
    EXPECT_EQ(put.body, "abc");
}

TEST(S3BlobStore, TheBandwidthCapPacesTheBytesSent) {
    FakeS3Server server([&](const FakeRequest&) { return http_answer(200, ""); });
    Logged logged;
    auto options = quick_options(logged);
    options.bytes_per_second = 1 << 20;  // 1 MiB/s, a burst of 256 KiB
    auto store = open_fake(server, options);
    ASSERT_TRUE(store);
    std::vector<std::uint8_t> data(3 << 19);  // 1.5 MiB
    auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE((*store)->put("k", data));
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(elapsed, 1.25 - 0.05);
    EXPECT_LT(elapsed, 5.0);
    EXPECT_EQ(server.requests().back().body.size(), data.size());
}

TEST(S3BlobStore, AFailedPartAbortsTheMultipartUpload) {
    FakeS3Server server([&](const FakeRequest& r) {
        if (is_bucket_check(r)) return http_answer(200, "");
        if (r.method == "POST" && r.target.ends_with("?uploads="))
            return http_answer(200,
                               "<InitiateMultipartUploadResult><UploadId>u-1</UploadId>"
                               "</InitiateMultipartUploadResult>");
        if (r.method == "PUT" && r.target.find("partNumber=2&") != std::string::npos)
            return http_answer(400, "<Error><Code>InvalidPart</Code></Error>");
        if (r.method == "PUT") return http_answer(200, "", "ETag: \"p\"\r\n");
        return http_answer(204, "");
    });
    Logged logged;
    auto options = quick_options(logged);
    options.part_size = 5 << 20;
    auto store = open_fake(server, options);
    ASSERT_TRUE(store);
    std::vector<std::uint8_t> data((11 << 20) + 1);  // three parts
    auto put = (*store)->put("big", data);
    ASSERT_FALSE(put);
    EXPECT_NE(put.error().message().find("InvalidPart"), std::string::npos);
    auto requests = server.requests();
    ASSERT_FALSE(requests.empty());
    EXPECT_EQ(requests.back().method, "DELETE");
    EXPECT_EQ(requests.back().target, "/bucket/pre/big?uploadId=u-1");
    for (const auto& r : requests)
        EXPECT_FALSE(r.method == "POST" && r.target.find("uploadId=") != std::string::npos)
            << "no completion after a failed part";
}

TEST(S3BlobStore, ARetriedIfAbsentPutThatMeetsItsOwnFirstAttemptSucceeds) {
    std::atomic<int> puts{0};
    std::string stored_sha;
    std::mutex mutex;
    FakeS3Server server([&](const FakeRequest& r) -> std::string {
        if (is_bucket_check(r)) return http_answer(200, "");
        if (r.method == "PUT") {
            auto at = r.headers.find("x-amz-meta-sha256: ");
            std::lock_guard lock(mutex);
            if (++puts <= 2) {  // stored, but the answer is lost (twice: curl retries once)
                stored_sha = r.headers.substr(at + 19, 64);
                return "";
            }
            return http_answer(412, "<Error><Code>PreconditionFailed</Code></Error>");
        }
        std::lock_guard lock(mutex);
        return http_answer(200, "", "x-amz-meta-sha256: " + stored_sha + "\r\n");
    });
    Logged logged;
    auto store = open_fake(server, quick_options(logged));
    ASSERT_TRUE(store);
    std::string text = "lock of host a";
    auto put =
        (*store)->put("locks/a", {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()},
                      PutOptions{.if_absent = true});
    EXPECT_TRUE(put) << put.error().message();
}

// A reset POST (initiate or complete of a multipart upload) is retried like any request: a
// repeated initiate gets a new upload id (the first one, if the gateway made it, holds no
// part); a repeated completion that finds its upload already completed counts as stored.
TEST(S3BlobStore, AResetMultipartInitiateAndCompletionAreRetried) {
    std::atomic<int> initiates{0};
    std::atomic<int> completions{0};
    std::mutex mutex;
    std::string stored_sha;
    FakeS3Server server([&](const FakeRequest& r) -> std::string {
        if (is_bucket_check(r)) return http_answer(200, "");
        if (r.method == "POST" && r.target.ends_with("?uploads=")) {
            std::lock_guard lock(mutex);
            auto at = r.headers.find("x-amz-meta-sha256: ");
            stored_sha = r.headers.substr(at + 19, 64);
            // Reset twice: libcurl itself retries once when a reused connection dies.
            if (++initiates <= 2) return "";
            return http_answer(200, "<InitiateMultipartUploadResult><UploadId>u-" +
                                        std::to_string(initiates.load()) +
                                        "</UploadId></InitiateMultipartUploadResult>");
        }
        if (r.method == "PUT") return http_answer(200, "", "ETag: \"p\"\r\n");
        if (r.method == "POST") {
            // The first completion is done by the gateway but its answer is lost.
            if (++completions <= 2) return "";
            return http_answer(404, "<Error><Code>NoSuchUpload</Code></Error>");
        }
        std::lock_guard lock(mutex);
        return http_answer(200, "", "x-amz-meta-sha256: " + stored_sha + "\r\n");
    });
    Logged logged;
    auto options = quick_options(logged);
    options.part_size = 5 << 20;
    auto store = open_fake(server, options);
    ASSERT_TRUE(store);
    std::vector<std::uint8_t> data((6 << 20) + 7, 0x5a);  // two parts
    auto put = (*store)->put("data/big", data);
    ASSERT_TRUE(put) << put.error().message();
    EXPECT_GE(logged.count("s3: POST data/big:"), 2u);  // the initiate and the completion
    auto requests = server.requests();
    for (const auto& r : requests)
        if (r.method == "PUT") {
            EXPECT_TRUE(r.target.ends_with("uploadId=u-3")) << r.target;
        }
}

}  // namespace
}  // namespace vmshadow::storage
