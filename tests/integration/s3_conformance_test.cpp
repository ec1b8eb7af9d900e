// SPDX-License-Identifier: MIT
// The blob-store conformance suite on a real S3 gateway (Ceph RGW in the lab), plus what is
// particular to S3: multipart, checksums, retries against a gateway that is not there.
//
// Reads VMSHADOW_TEST_S3_ENDPOINT (http://127.0.0.1:PORT) and AWS_* from the environment (the
// s3 fixture's env file, or a developer's dev cluster); with VMSHADOW_TEST_S3_HTTPS_ENDPOINT and
// VMSHADOW_TEST_S3_CACERT the suite also runs over TLS with the lab's CA. Without an endpoint
// every test is skipped. One bucket per run (s3client-<random>), every test under its own
// prefix, everything deleted at the end, even when a test fails.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <mutex>
#include <random>

#include "storage/s3_blob_store.h"
#include "unit/storage/blob_store_conformance.h"

namespace vmshadow::storage {
namespace {

using conformance::BlobStoreConformance;
using conformance::ConformanceBackend;

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

std::string random_suffix() {
    std::random_device device;
    std::mt19937_64 random(device());
    static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::string out;
    for (int i = 0; i < 10; ++i) out += kDigits[random() % 36];
    return out;
}

// The run's bucket: made by the first store opened with create_bucket, deleted by the
// environment's TearDown once every test removed its objects.
struct RunBucket {
    std::string name = "s3client-" + random_suffix();
    std::mutex mutex;
    std::vector<std::string> endpoints;  // where it was created
};
RunBucket& run_bucket() {
    static RunBucket bucket;
    return bucket;
}

S3Options test_options(const std::string& ca_file = "") {
    S3Options options;
    options.part_size = 5ULL << 20;  // the smallest S3 allows: multipart tests stay quick
    options.connections = 8;
    options.max_attempts = 4;
    options.max_retry_seconds = 20;
    options.create_bucket = true;
    options.ca_file = ca_file;
    options.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    return options;
}

Result<std::unique_ptr<BlobStore>> open_store(const std::string& endpoint,
                                              const std::string& prefix, const S3Options& options) {
    auto location = parse_s3_location("s3:" + endpoint + "/" + run_bucket().name +
                                      (prefix.empty() ? "" : "/" + prefix));
    if (!location) return fail(location.error());
    auto credentials = load_s3_credentials("");
    if (!credentials) return fail(credentials.error());
    {
        std::lock_guard lock(run_bucket().mutex);
        auto& e = run_bucket().endpoints;
        if (std::find(e.begin(), e.end(), endpoint) == e.end()) e.push_back(endpoint);
    }
    return open_s3_blob_store(*location, *credentials, options);
}

// A fresh prefix per test; the store's objects go with it.
std::function<std::shared_ptr<BlobStore>()> s3_maker(std::string endpoint_var,
                                                     std::string ca_var = "") {
    return [endpoint_var, ca_var]() -> std::shared_ptr<BlobStore> {
        auto endpoint = env(endpoint_var.c_str());
        if (endpoint.empty()) return nullptr;
        static std::atomic<int> counter{0};
        auto prefix = "t" + std::to_string(counter++) + "-" + random_suffix();
        auto store =
            open_store(endpoint, prefix, test_options(ca_var.empty() ? "" : env(ca_var.c_str())));
        if (!store) {
            ADD_FAILURE() << store.error().message();
            return nullptr;
        }
        struct Holder {
            std::unique_ptr<BlobStore> store;
            ~Holder() {
                if (auto listed = store->list(""))
                    for (const auto& info : *listed) (void)store->remove(info.key);
            }
        };
        auto holder = std::make_shared<Holder>(std::move(*store));
        return std::shared_ptr<BlobStore>(holder, holder->store.get());
    };
}

// Deletes the run's bucket with a plain signed DELETE (the store has no bucket removal).
void delete_bucket(const std::string& endpoint, const std::string& ca_file) {
    auto credentials = load_s3_credentials("");
    if (!credentials) return;
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    std::string url = endpoint + "/" + run_bucket().name;
    std::string sigv4 = "aws:amz:" + credentials->region + ":s3";
    curl_slist* headers = curl_slist_append(
        nullptr,
        "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, "DELETE");
    curl_easy_setopt(curl.get(), CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_USERNAME, credentials->access_key_id.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_PASSWORD, credentials->secret_access_key.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers);
    if (!ca_file.empty()) curl_easy_setopt(curl.get(), CURLOPT_CAINFO, ca_file.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(
        curl.get(), CURLOPT_WRITEFUNCTION,
        +[](char*, std::size_t size, std::size_t count, void*) { return size * count; });
    auto code = curl_easy_perform(curl.get());
    long status = 0;
    curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
    if (code != CURLE_OK || (status != 204 && status != 404))
        std::fprintf(stderr, "s3_conformance: could not delete bucket %s: curl %d, HTTP %ld\n",
                     run_bucket().name.c_str(), static_cast<int>(code), status);
    curl_slist_free_all(headers);
}

class BucketCleanup : public ::testing::Environment {
  public:
    void TearDown() override {
        // One endpoint suffices: http and https reach the same gateway.
        if (!run_bucket().endpoints.empty()) {
            auto& first = run_bucket().endpoints.front();
            delete_bucket(first, first.starts_with("https") ? env("VMSHADOW_TEST_S3_CACERT") : "");
        }
    }
};
[[maybe_unused]] auto* const bucket_cleanup =
    ::testing::AddGlobalTestEnvironment(std::make_unique<BucketCleanup>().release());

std::function<std::string()> needs(std::string var) {
    return [var] {
        return env(var.c_str()).empty() ? var + " is not set (no S3 gateway to test)" : "";
    };
}

TEST(S3Gateway, AnUntrustedCertificateIsRefusedPointingAtCacert) {
    auto endpoint = env("VMSHADOW_TEST_S3_HTTPS_ENDPOINT");
    if (endpoint.empty()) GTEST_SKIP() << "VMSHADOW_TEST_S3_HTTPS_ENDPOINT is not set";
    auto store = open_store(endpoint, "", test_options(/*ca_file=*/""));
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::unavailable);
    EXPECT_NE(store.error().message().find("--cacert"), std::string::npos)
        << store.error().message();
}

TEST(S3Gateway, AWrongSecretIsAPermissionErrorNotRetried) {
    auto endpoint = env("VMSHADOW_TEST_S3_ENDPOINT");
    if (endpoint.empty()) GTEST_SKIP() << "VMSHADOW_TEST_S3_ENDPOINT is not set";
    auto location = parse_s3_location("s3:" + endpoint + "/" + run_bucket().name);
    ASSERT_TRUE(location);
    auto credentials = load_s3_credentials("");
    ASSERT_TRUE(credentials);
    credentials->secret_access_key += "x";
    int retries = 0;
    auto options = test_options();
    options.log = [&](const std::string&) { ++retries; };
    auto store = open_s3_blob_store(*location, *credentials, options);
    ASSERT_FALSE(store);
    EXPECT_EQ(store.error().kind(), ErrorKind::permission) << store.error().message();
    EXPECT_EQ(retries, 0);
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(
    S3, BlobStoreConformance,
    ::testing::Values(ConformanceBackend{"rgw", s3_maker("VMSHADOW_TEST_S3_ENDPOINT"),
                                         (12ULL << 20) + 123, needs("VMSHADOW_TEST_S3_ENDPOINT")},
                      ConformanceBackend{
                          "rgw_https",
                          s3_maker("VMSHADOW_TEST_S3_HTTPS_ENDPOINT", "VMSHADOW_TEST_S3_CACERT"),
                          (6ULL << 20) + 5, needs("VMSHADOW_TEST_S3_HTTPS_ENDPOINT")}),
    conformance::conformance_backend_name);

}  // namespace vmshadow::storage
