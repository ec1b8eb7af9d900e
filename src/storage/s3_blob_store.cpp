// SPDX-License-Identifier: MIT
// The S3 blob store: requests, retries, caps and multipart on top of s3_transfer.h.
#include "storage/s3_blob_store.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <random>
#include <semaphore>
#include <thread>

#include "common/hex.h"
#include "common/os_error.h"
#include "common/unique_fd.h"
#include "storage/s3_answers.h"
#include "storage/s3_pacing.h"
#include "storage/s3_transfer.h"
#include "storage/s3_url.h"

namespace vmshadow::storage {
namespace {

constexpr const char* kChecksumHeader = "x-amz-meta-sha256";

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void sleep_seconds(double seconds) {
    if (seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

double random01() {
    thread_local std::mt19937_64 generator{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(generator);
}

std::string format_seconds(double s) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", s);
    return text;
}

// SHA-256 over several updates (a file read in chunks, the parts of a multipart upload).
class Sha256 {
  public:
    Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
    void update(const std::uint8_t* data, std::size_t size) {
        EVP_DigestUpdate(ctx_.get(), data, size);
    }
    std::string hex() {
        std::uint8_t digest[32];
        unsigned int size = 0;
        EVP_DigestFinal_ex(ctx_.get(), digest, &size);
        return hex_encode(std::span<const std::uint8_t>(digest, size));
    }

  private:
    struct Free {
        void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
    };
    std::unique_ptr<EVP_MD_CTX, Free> ctx_;
};

std::string sha256_hex(ByteView data) {
    Sha256 sha;
    sha.update(data.data(), data.size());
    return sha.hex();
}

// What was stored, hashed once: the whole object and each part (parts of `part_size`).
struct Hashes {
    std::string whole;
    std::vector<std::string> parts;
};

// `part_size` 0 = one part (one PUT): its hash is the whole's, computed once.
Result<Hashes> hash_file(int fd, std::uint64_t size, std::uint64_t part_size,
                         const std::string& what) {
    Hashes hashes;
    Sha256 whole;
    Sha256 part;  // used only when there are parts
    std::vector<std::uint8_t> buffer(4 << 20);
    std::uint64_t done = 0;
    std::uint64_t part_end = part_size ? std::min(size, part_size) : size;
    while (done < size) {
        auto want =
            static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), part_end - done));
        ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(os_error(what + ": read", errno));
        if (n == 0)
            return fail(ErrorKind::io, what + ": the file became shorter while it was stored");
        whole.update(buffer.data(), static_cast<std::size_t>(n));
        if (part_size) part.update(buffer.data(), static_cast<std::size_t>(n));
        done += static_cast<std::uint64_t>(n);
        if (part_size && done == part_end) {
            hashes.parts.push_back(part.hex());
            part = Sha256();
            part_end = std::min(size, done + part_size);
        }
    }
    hashes.whole = whole.hex();
    if (hashes.parts.empty()) hashes.parts.push_back(hashes.whole);
    return hashes;
}

Hashes hash_memory(ByteView data, std::uint64_t part_size) {
    Hashes hashes;
    hashes.whole = sha256_hex(data);
    if (part_size)
        for (std::uint64_t at = 0; at < data.size(); at += part_size)
            hashes.parts.push_back(
                sha256_hex(data.subspan(at, std::min<std::uint64_t>(part_size, data.size() - at))));
    if (hashes.parts.empty()) hashes.parts.push_back(hashes.whole);
    return hashes;
}

// The bytes to store: memory, or a whole open file.
struct Source {
    ByteView memory;
    int fd = -1;
    std::uint64_t size = 0;

    RequestBody range(std::uint64_t offset, std::uint64_t length, std::string sha) const {
        RequestBody body;
        if (fd >= 0) {
            body.fd = fd;
            body.offset = offset;
            body.size = length;
        } else {
            body.memory = memory.subspan(offset, length);
        }
        body.sha256_hex = std::move(sha);
        return body;
    }
};

ErrorKind kind_of_status(long status) {
    switch (status) {
        case 404:
            return ErrorKind::not_found;
        case 401:
        case 403:
            return ErrorKind::permission;
        case 409:
        case 412:
            return ErrorKind::conflict;
        case 416:
            return ErrorKind::corruption;
        case 400:
            return ErrorKind::invalid_argument;
        default:
            return status >= 500 || status == 429 ? ErrorKind::unavailable : ErrorKind::io;
    }
}

bool retryable_curl_error(CURLcode code) {
    switch (code) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_FAIL_REWIND:  // curl's own resend on a dead connection; ours rewinds
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_HTTP3:
            return true;
        default:
            return false;
    }
}

enum class Verdict { ok, retry, fail };

struct Outcome {
    Verdict verdict;
    ErrorKind kind = ErrorKind::io;
    std::string why;  // "503 SlowDown: Please reduce your request rate" or a curl error
};

Outcome judge(const S3Response& r) {
    if (r.curl != CURLE_OK) {
        if (r.overflow && r.status >= 200 && r.status < 300)
            return {Verdict::fail, ErrorKind::corruption,
                    "the gateway sent a longer answer than was asked for"};
        if (r.overflow)
            return {Verdict::retry, ErrorKind::unavailable,
                    std::to_string(r.status) + " with an oversized answer"};
        if (r.curl == CURLE_PEER_FAILED_VERIFICATION || r.curl == CURLE_SSL_CACERT_BADFILE)
            return {Verdict::fail, ErrorKind::unavailable,
                    r.curl_error + " (give the gateway's CA certificate with --cacert)"};
        if (r.curl == CURLE_ABORTED_BY_CALLBACK || r.curl == CURLE_READ_ERROR)
            return {Verdict::fail, ErrorKind::io,
                    "the local file could not be read: " + r.curl_error};
        auto kind =
            r.curl == CURLE_OPERATION_TIMEDOUT ? ErrorKind::timeout : ErrorKind::unavailable;
        return {retryable_curl_error(r.curl) ? Verdict::retry : Verdict::fail, kind, r.curl_error};
    }
    if (r.status >= 200 && r.status < 300) return {Verdict::ok};
    auto answer = parse_error_answer(r.body);
    std::string why = std::to_string(r.status);
    if (!answer.code.empty())
        why += " " + answer.code;
    else if (r.status == 403)  // a HEAD's answer has no body to say why
        why += " Forbidden (wrong access key or secret, or no access to the bucket)";
    else if (r.status == 404)
        why += " Not Found";
    if (!answer.message.empty()) why += ": " + answer.message;
    bool retry = r.status >= 500 || r.status == 429 || answer.code == "RequestTimeout" ||
                 answer.code == "SlowDown";
    return {retry ? Verdict::retry : Verdict::fail, kind_of_status(r.status), why};
}

class S3BlobStore final : public BlobStore {
  public:
    S3BlobStore(S3Location location, S3Credentials credentials, S3Options options)
        : where_(std::move(location)),
          location_(where_.text()),
          options_(std::move(options)),
          slots_(static_cast<std::ptrdiff_t>(options_.connections)) {
        setup_.sigv4 = "aws:amz:" + credentials.region + ":s3";
        setup_.access_key_id = credentials.access_key_id;
        setup_.secret_access_key = credentials.secret_access_key;
        setup_.session_token = credentials.session_token;
        setup_.ca_file = options_.ca_file;
        setup_.connect_timeout_seconds = options_.connect_timeout_seconds;
        setup_.low_speed_seconds = options_.transfer_timeout_seconds;
        if (options_.requests_per_second > 0)
            request_cap_.emplace(options_.requests_per_second,
                                 std::max(1.0, options_.requests_per_second / 10));
        if (options_.bytes_per_second > 0) {
            byte_cap_.emplace(static_cast<double>(options_.bytes_per_second),
                              std::max(256.0 * 1024, options_.bytes_per_second / 10.0));
            setup_.pace_bytes = [this](std::size_t n) { pace(*byte_cap_, n, "bandwidth"); };
        }
        policy_.max_attempts = options_.max_attempts;
        policy_.max_total_seconds = options_.max_retry_seconds;
    }

    const std::string& location() const override { return location_; }

    Status prepare_bucket();
    Status put(std::string_view key, ByteView data, const PutOptions& options) override;
    Status put_file(std::string_view key, const std::string& local_path,
                    const PutOptions& options) override;
    Status read_at(std::string_view key, std::uint64_t offset,
                   std::span<std::uint8_t> out) override;
    Result<std::vector<std::uint8_t>> get(std::string_view key) override;
    Result<BlobInfo> stat(std::string_view key) override;
    Result<std::vector<BlobInfo>> list(std::string_view prefix) override;
    Status remove(std::string_view key) override;

  private:
    std::string full_key(std::string_view key) const {
        return where_.prefix.empty() ? std::string(key) : where_.prefix + "/" + std::string(key);
    }
    std::string url(std::string_view key, const QueryParams& query = {}) const {
        return s3_url(where_, options_.virtual_hosted, key.empty() ? "" : full_key(key), query);
    }
    std::string name(std::string_view key) const {
        return key.empty() ? location_ : location_ + ": " + std::string(key);
    }
    Status valid(std::string_view key) const {
        if (auto st = check_key(key); !st) return fail(st.error().with_context(location_));
        return {};
    }
    void log(const std::string& line) const {
        if (options_.log) options_.log(line);
    }

    void pace(TokenBucket& bucket, double amount, const char* cap);
    Result<S3Response> execute(const S3Request& request, std::string_view key,
                               int* attempts_used = nullptr);
    // If-None-Match needs one PUT (multipart completion has no such condition on RGW 16);
    // the objects stored that way are small (locks).
    bool multipart(const Source& source, const PutOptions& options) const {
        return source.size > options_.part_size && !options.if_absent;
    }
    // The part size the hashes are taken for: 0 when the object goes in one PUT.
    std::uint64_t hashed_part_size(const Source& source, const PutOptions& options) const {
        return multipart(source, options) ? options_.part_size : 0;
    }
    Status store(std::string_view key, const Source& source, const Hashes& hashes,
                 const PutOptions& options);
    Status put_single(std::string_view key, const Source& source, const Hashes& hashes,
                      const PutOptions& options);
    Status put_multipart(std::string_view key, const Source& source, const Hashes& hashes);
    Result<std::vector<std::string>> upload_parts(std::string_view key, const Source& source,
                                                  const Hashes& hashes,
                                                  const std::string& upload_id);
    void abort_multipart(std::string_view key, const std::string& upload_id);
    // After a retried write answered as if it had failed: is our content there anyway?
    bool stored_already(std::string_view key, const std::string& sha256);

    CurlEasy take_handle();
    void give_back(CurlEasy handle);

    S3Location where_;
    std::string location_;
    S3Options options_;
    TransferSetup setup_;
    RetryPolicy policy_;
    std::counting_semaphore<64> slots_;
    std::mutex pool_mutex_;
    std::vector<CurlEasy> idle_;
    std::optional<TokenBucket> request_cap_;
    std::optional<TokenBucket> byte_cap_;
    std::atomic<double> last_throttle_log_{0};
};

void S3BlobStore::pace(TokenBucket& bucket, double amount, const char* cap) {
    double wait = bucket.reserve(amount, now_seconds());
    if (wait > 2) {
        double now = now_seconds();
        double last = last_throttle_log_.load();
        if (now - last > 30 && last_throttle_log_.compare_exchange_strong(last, now))
            log("s3: waiting " + format_seconds(wait) + " s for the " + cap + " cap");
    }
    sleep_seconds(wait);
}

CurlEasy S3BlobStore::take_handle() {
    {
        std::lock_guard lock(pool_mutex_);
        if (!idle_.empty()) {
            auto handle = std::move(idle_.back());
            idle_.pop_back();
            return handle;
        }
    }
    return CurlEasy(curl_easy_init());
}

void S3BlobStore::give_back(CurlEasy handle) {
    std::lock_guard lock(pool_mutex_);
    idle_.push_back(std::move(handle));
}

Result<S3Response> S3BlobStore::execute(const S3Request& request, std::string_view key,
                                        int* attempts_used) {
    const std::string what =
        request.method + " " + (key.empty() ? where_.bucket : std::string(key));
    double slept = 0;
    for (int attempt = 1;; ++attempt) {
        if (attempts_used) *attempts_used = attempt;
        if (request_cap_) pace(*request_cap_, 1, "request-rate");
        S3Response response;
        {
            slots_.acquire();  // at most `connections` transfers in flight
            auto handle = take_handle();
            if (!handle) {
                slots_.release();
                return fail(ErrorKind::internal, name(key) + ": curl_easy_init failed");
            }
            response = perform_transfer(handle.get(), setup_, request);
            // curl's own resend may have met the first sending's effect, like our retry.
            if (attempts_used && response.resent) *attempts_used = attempt + 1;
            give_back(std::move(handle));
            slots_.release();
        }
        auto outcome = judge(response);
        if (outcome.verdict == Verdict::ok) return response;
        if (outcome.verdict == Verdict::retry) {
            if (auto delay = next_retry_delay(policy_, attempt, slept, random01())) {
                log("s3: " + what + ": " + outcome.why + ", retry " + std::to_string(attempt) +
                    " of " + std::to_string(policy_.max_attempts - 1) + " in " +
                    format_seconds(*delay) + " s");
                sleep_seconds(*delay);
                slept += *delay;
                continue;
            }
            return fail(outcome.kind, name(key) + ": " + request.method + ": " + outcome.why +
                                          " (gave up after " + std::to_string(attempt) +
                                          " attempts and " + format_seconds(slept) +
                                          " s of backoff)");
        }
        return fail(outcome.kind, name(key) + ": " + request.method + ": " + outcome.why);
    }
}

Status S3BlobStore::prepare_bucket() {
    S3Request head{.method = "HEAD", .url = s3_url(where_, options_.virtual_hosted, "")};
    auto found = execute(head, "");
    if (found) return {};
    if (found.error().kind() != ErrorKind::not_found) return fail(found.error());
    if (!options_.create_bucket)
        return fail(ErrorKind::not_found, location_ + ": the bucket '" + where_.bucket +
                                              "' does not exist (`vmshadow repo init` creates it)");
    std::string config;
    if (setup_.sigv4 != "aws:amz:us-east-1:s3") {
        auto region = setup_.sigv4.substr(8, setup_.sigv4.size() - 8 - 3);
        config = "<CreateBucketConfiguration><LocationConstraint>" + region +
                 "</LocationConstraint></CreateBucketConfiguration>";
    }
    auto bytes = ByteView(reinterpret_cast<const std::uint8_t*>(config.data()), config.size());
    RequestBody body{.memory = bytes, .sha256_hex = sha256_hex(bytes)};
    S3Request create{.method = "PUT", .url = head.url, .body = &body};
    auto created = execute(create, "");
    if (!created && created.error().message().find("BucketAlreadyOwnedByYou") == std::string::npos)
        return fail(created.error().with_context("create the bucket"));
    return {};
}

Status S3BlobStore::put(std::string_view key, ByteView data, const PutOptions& options) {
    if (auto st = valid(key); !st) return st;
    Source source{.memory = data, .size = data.size()};
    return store(key, source, hash_memory(data, hashed_part_size(source, options)), options);
}

Status S3BlobStore::put_file(std::string_view key, const std::string& local_path,
                             const PutOptions& options) {
    if (auto st = valid(key); !st) return st;
    UniqueFd fd(::open(local_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail(os_error(name(key) + ": open " + local_path, errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return fail(os_error(name(key) + ": stat " + local_path, errno));
    Source source{.fd = fd.get(), .size = static_cast<std::uint64_t>(st.st_size)};
    auto hashes = hash_file(fd.get(), source.size, hashed_part_size(source, options),
                            name(key) + ": " + local_path);
    if (!hashes) return fail(hashes.error());
    return store(key, source, *hashes, options);
}

Status S3BlobStore::store(std::string_view key, const Source& source, const Hashes& hashes,
                          const PutOptions& options) {
    if (!multipart(source, options)) return put_single(key, source, hashes, options);
    return put_multipart(key, source, hashes);
}

Status S3BlobStore::put_single(std::string_view key, const Source& source, const Hashes& hashes,
                               const PutOptions& options) {
    auto body = source.range(0, source.size, hashes.whole);
    S3Request request{.method = "PUT", .url = url(key), .body = &body};
    request.headers = {"Content-Type: application/octet-stream",
                       std::string(kChecksumHeader) + ": " + hashes.whole};
    if (options.if_absent) request.headers.push_back("If-None-Match: *");
    int attempts = 0;
    auto done = execute(request, key, &attempts);
    if (done) return {};
    if (done.error().kind() == ErrorKind::conflict && options.if_absent) {
        // A retry after a lost answer meets our own first PUT: that is a success.
        if (attempts > 1 && stored_already(key, hashes.whole)) return {};
        return fail(ErrorKind::conflict, name(key) + ": the object exists already");
    }
    return fail(done.error());
}

bool S3BlobStore::stored_already(std::string_view key, const std::string& sha256) {
    S3Request head{.method = "HEAD", .url = url(key)};
    auto found = execute(head, key);
    if (!found) return false;
    auto it = found->headers.find(kChecksumHeader);
    return it != found->headers.end() && it->second == sha256;
}

Status S3BlobStore::put_multipart(std::string_view key, const Source& source,
                                  const Hashes& hashes) {
    RequestBody none{.sha256_hex = sha256_hex({})};
    S3Request initiate{.method = "POST", .url = url(key, {{"uploads", ""}}), .body = &none};
    initiate.headers = {"Content-Type: application/octet-stream",
                        std::string(kChecksumHeader) + ": " + hashes.whole};
    // A retried initiation gets a new upload id; the one a lost answer carried holds no part.
    auto started = execute(initiate, key);
    if (!started) return fail(started.error());
    auto upload_id = parse_upload_id(started->body);
    if (!upload_id) return fail(upload_id.error().with_context(name(key)));

    auto etags = upload_parts(key, source, hashes, *upload_id);
    if (!etags) {
        abort_multipart(key, *upload_id);
        return fail(etags.error());
    }
    std::string xml = "<CompleteMultipartUpload>";
    for (std::size_t i = 0; i < etags->size(); ++i)
        xml += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>" + (*etags)[i] +
               "</ETag></Part>";
    xml += "</CompleteMultipartUpload>";
    auto bytes = ByteView(reinterpret_cast<const std::uint8_t*>(xml.data()), xml.size());
    RequestBody body{.memory = bytes, .sha256_hex = sha256_hex(bytes)};
    S3Request complete{
        .method = "POST", .url = url(key, {{"uploadId", *upload_id}}), .body = &body};
    complete.headers = {"Content-Type: application/xml"};
    int attempts = 0;
    auto completed = execute(complete, key, &attempts);
    if (completed) {
        if (auto st = check_complete_answer(completed->body); !st) {
            abort_multipart(key, *upload_id);
            return fail(st.error().with_context(name(key) + ": complete the multipart upload"));
        }
        return {};
    }
    // A retried completion whose first answer was lost finds the upload gone: ours is stored.
    if (attempts > 1 && completed.error().kind() == ErrorKind::not_found &&
        stored_already(key, hashes.whole))
        return {};
    abort_multipart(key, *upload_id);
    return fail(completed.error());
}

Result<std::vector<std::string>> S3BlobStore::upload_parts(std::string_view key,
                                                           const Source& source,
                                                           const Hashes& hashes,
                                                           const std::string& upload_id) {
    const std::size_t count = hashes.parts.size();
    std::vector<std::string> etags(count);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::optional<Error> first_error;
    auto work = [&] {
        for (std::size_t i = next++; i < count && !failed; i = next++) {
            std::uint64_t offset = i * options_.part_size;
            auto body = source.range(offset, std::min(options_.part_size, source.size - offset),
                                     hashes.parts[i]);
            S3Request request{
                .method = "PUT",
                .url = url(key, {{"partNumber", std::to_string(i + 1)}, {"uploadId", upload_id}}),
                .body = &body};
            auto done = execute(request, key);
            std::string etag;
            if (done) {
                auto it = done->headers.find("etag");
                if (it != done->headers.end()) etag = it->second;
            }
            bool etag_ok = !etag.empty() && etag.size() <= 128 &&
                           etag.find_first_of("<>&") == std::string::npos;
            if (done && etag_ok) {
                etags[i] = etag;
                continue;
            }
            std::lock_guard lock(error_mutex);
            if (!first_error)
                first_error = done ? Error(ErrorKind::corruption,
                                           name(key) + ": part " + std::to_string(i + 1) +
                                               ": the gateway's answer has no usable ETag")
                                   : done.error();
            failed = true;
        }
    };
    std::size_t workers = std::min<std::size_t>(options_.connections, count);
    {
        std::vector<std::jthread> threads;
        for (std::size_t t = 1; t < workers; ++t) threads.emplace_back(work);
        work();
    }
    if (first_error) return fail(*first_error);
    return etags;
}

void S3BlobStore::abort_multipart(std::string_view key, const std::string& upload_id) {
    S3Request abort{.method = "DELETE", .url = url(key, {{"uploadId", upload_id}})};
    if (auto done = execute(abort, key); !done && done.error().kind() != ErrorKind::not_found)
        log("s3: " + name(key) + ": could not abort the multipart upload " + upload_id +
            " (the bucket's lifecycle rule for incomplete uploads removes it): " +
            done.error().message());
}

Status S3BlobStore::read_at(std::string_view key, std::uint64_t offset,
                            std::span<std::uint8_t> out) {
    if (auto st = valid(key); !st) return st;
    if (out.empty()) return check_empty_read(*this, key, offset);
    std::uint64_t last = offset + out.size() - 1;
    S3Request request{.method = "GET", .url = url(key), .into = out};
    request.headers = {"Range: bytes=" + std::to_string(offset) + "-" + std::to_string(last)};
    auto done = execute(request, key);
    if (!done) {
        if (done.error().kind() == ErrorKind::corruption)  // 416: past the end
            return fail(ErrorKind::corruption, name(key) + ": the range " + std::to_string(offset) +
                                                   "+" + std::to_string(out.size()) +
                                                   " starts past the object's end");
        return fail(done.error());
    }
    auto short_object = [&] {
        return fail(ErrorKind::corruption, name(key) + ": the object is shorter than the range " +
                                               std::to_string(offset) + "+" +
                                               std::to_string(out.size()));
    };
    if (done->status == 206) {
        auto it = done->headers.find("content-range");
        std::uint64_t first = 0, end = 0;
        if (it == done->headers.end() ||
            std::sscanf(it->second.c_str(), "bytes %lu-%lu/", &first, &end) != 2)
            return fail(ErrorKind::corruption,
                        name(key) + ": the gateway's 206 has no Content-Range");
        if (first != offset)
            return fail(ErrorKind::corruption, name(key) + ": the gateway sent another range");
        if (end != last || done->into_filled != out.size()) return short_object();
        return {};
    }
    // 200: the gateway ignored the range and sent the whole object; it fits only if it is it.
    if (offset == 0 && done->into_filled == out.size()) return {};
    return short_object();
}

Result<std::vector<std::uint8_t>> S3BlobStore::get(std::string_view key) {
    if (auto st = valid(key); !st) return fail(st.error());
    S3Request request{.method = "GET", .url = url(key), .into_vector = true};
    auto done = execute(request, key);
    if (!done) return fail(done.error());
    auto length = done->headers.find("content-length");
    if (length != done->headers.end() && length->second != std::to_string(done->data.size()))
        return fail(ErrorKind::corruption, name(key) + ": received " +
                                               std::to_string(done->data.size()) +
                                               " bytes, the gateway announced " + length->second);
    auto checksum = done->headers.find(kChecksumHeader);
    if (checksum != done->headers.end() && checksum->second != sha256_hex(done->data))
        return fail(ErrorKind::corruption,
                    name(key) + ": the content does not match the SHA-256 stored with it");
    return std::move(done->data);
}

Result<BlobInfo> S3BlobStore::stat(std::string_view key) {
    if (auto st = valid(key); !st) return fail(st.error());
    S3Request request{.method = "HEAD", .url = url(key)};
    auto done = execute(request, key);
    if (!done) {
        if (done.error().kind() == ErrorKind::not_found)
            return fail(ErrorKind::not_found, name(key) + ": no such object");
        return fail(done.error());
    }
    BlobInfo info{std::string(key)};
    auto length = done->headers.find("content-length");
    if (length == done->headers.end() ||
        std::sscanf(length->second.c_str(), "%lu", &info.size) != 1)
        return fail(ErrorKind::corruption, name(key) + ": the gateway gave no Content-Length");
    auto modified = done->headers.find("last-modified");
    if (modified != done->headers.end()) {
        auto t = curl_getdate(modified->second.c_str(), nullptr);
        if (t > 0) info.modified = t;
    }
    return info;
}

Result<std::vector<BlobInfo>> S3BlobStore::list(std::string_view prefix) {
    if (prefix.size() > 1024)
        return fail(ErrorKind::invalid_argument,
                    location_ + ": list prefix longer than 1024 bytes");
    std::string store_prefix = where_.prefix.empty() ? "" : where_.prefix + "/";
    std::vector<BlobInfo> out;
    std::string token;
    std::string after;
    do {
        QueryParams query{{"list-type", "2"},
                          {"max-keys", std::to_string(kMaxKeysPerPage)},
                          {"prefix", store_prefix + std::string(prefix)}};
        if (!token.empty()) query.emplace_back("continuation-token", token);
        S3Request request{.method = "GET",
                          .url = s3_url(where_, options_.virtual_hosted, "", query),
                          .small_body_bound = kMaxListAnswerBytes};
        auto done = execute(request, std::string(prefix) + "*");
        if (!done) return fail(done.error());
        auto page = parse_list_page(done->body, store_prefix, prefix, after);
        if (!page)
            return fail(page.error().with_context(location_ + ": list " + std::string(prefix)));
        for (const auto& skipped : page->skipped)
            log("s3: " + location_ + ": ignoring '" + skipped + "', which is no valid storage key");
        for (auto& info : page->objects) out.push_back(std::move(info));
        after = page->last_key;
        token = page->truncated ? page->next_token : "";
    } while (!token.empty());
    return out;
}

Status S3BlobStore::remove(std::string_view key) {
    if (auto st = valid(key); !st) return st;
    S3Request request{.method = "DELETE", .url = url(key)};
    auto done = execute(request, key);
    if (!done && done.error().kind() != ErrorKind::not_found) return fail(done.error());
    return {};
}

Status check_options(const S3Options& options) {
    auto bad = [](const std::string& why) {
        return fail(ErrorKind::invalid_argument, "S3 options: " + why);
    };
    if (options.connections < 1 || options.connections > 64)
        return bad("connections must be 1..64");
    if (options.part_size < (5ULL << 20) || options.part_size > (1ULL << 30))
        return bad("the part size must be 5 MiB..1 GiB");
    if (options.max_attempts < 1 || options.max_attempts > 100)
        return bad("max attempts must be 1..100");
    if (options.max_retry_seconds < 0 || options.requests_per_second < 0)
        return bad("negative retry time or request rate");
    if (options.bytes_per_second != 0 && options.bytes_per_second < 64 * 1024)
        return bad("a bandwidth cap below 64 KiB/s would trip the transfer time-out");
    return {};
}

}  // namespace

Result<std::unique_ptr<BlobStore>> open_s3_blob_store(const S3Location& location,
                                                      const S3Credentials& credentials,
                                                      const S3Options& options) {
    static std::once_flag curl_ready;
    std::call_once(curl_ready, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    if (auto st = check_options(options); !st)
        return fail(st.error().with_context(location.text()));
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty())
        return fail(ErrorKind::invalid_argument, location.text() + ": no S3 credentials");
    auto store = std::make_unique<S3BlobStore>(location, credentials, options);
    if (auto st = store->prepare_bucket(); !st) return fail(st.error());
    return std::unique_ptr<BlobStore>(std::move(store));
}

}  // namespace vmshadow::storage
