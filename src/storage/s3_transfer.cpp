// SPDX-License-Identifier: MIT
#include "storage/s3_transfer.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace vmshadow::storage {
namespace {

constexpr std::size_t kMaxHeaderBytes = 64 << 10;
constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct SlistDeleter {
    void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

struct TransferState {
    const TransferSetup* setup;
    const S3Request* request;
    S3Response* response;
    std::uint64_t sent = 0;
    std::size_t header_bytes = 0;
    bool status_known = false;
    bool success = false;
};

std::size_t read_body(char* buffer, std::size_t size, std::size_t count, void* user) {
    auto& state = *static_cast<TransferState*>(user);
    const RequestBody& body = *state.request->body;
    std::uint64_t total = body.fd >= 0 ? body.size : body.memory.size();
    std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(size * count, total - state.sent));
    if (n == 0) return 0;
    if (body.fd >= 0) {
        std::size_t done = 0;
        while (done < n) {
            ssize_t r = ::pread(body.fd, buffer + done, n - done,
                                static_cast<off_t>(body.offset + state.sent + done));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return CURL_READFUNC_ABORT;  // the file shrank or failed
            done += static_cast<std::size_t>(r);
        }
    } else {
        std::memcpy(buffer, body.memory.data() + state.sent, n);
    }
    if (state.setup->pace_bytes) state.setup->pace_bytes(n);
    state.sent += n;
    return n;
}

// libcurl resends a request by itself when a kept-alive connection turns out dead, and must
// rewind the body for that (a small POST body goes out with its headers): without this it
// gives up with CURLE_SEND_FAIL_REWIND.
int seek_body(void* user, curl_off_t offset, int origin) {
    auto& state = *static_cast<TransferState*>(user);
    const RequestBody& body = *state.request->body;
    std::uint64_t total = body.fd >= 0 ? body.size : body.memory.size();
    if (origin != SEEK_SET || offset < 0 || static_cast<std::uint64_t>(offset) > total)
        return CURL_SEEKFUNC_CANTSEEK;
    if (state.sent > 0) state.response->resent = true;
    state.sent = static_cast<std::uint64_t>(offset);
    return CURL_SEEKFUNC_OK;
}

// The status decides where the body goes: a 2xx answer where the caller asked, anything
// else (an S3 <Error>) into the bounded string.
void learn_status(TransferState& state, CURL* handle) {
    if (state.status_known) return;
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &state.response->status);
    state.success = state.response->status >= 200 && state.response->status < 300;
    state.status_known = true;
}

struct WriteContext {
    TransferState* state;
    CURL* handle;
};

std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) {
    auto& ctx = *static_cast<WriteContext*>(user);
    auto& state = *ctx.state;
    auto& response = *state.response;
    const auto& request = *state.request;
    std::size_t n = size * count;
    learn_status(state, ctx.handle);
    if (state.success && !request.into.empty()) {
        if (response.into_filled + n > request.into.size()) {
            response.overflow = true;
            return 0;  // aborts: the gateway sent more than the range asked for
        }
        std::memcpy(request.into.data() + response.into_filled, data, n);
        response.into_filled += n;
    } else if (state.success && request.into_vector) {
        if (response.data.empty()) {
            // One allocation for the announced length, within reason: it is the gateway's word.
            curl_off_t announced = 0;
            curl_easy_getinfo(ctx.handle, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
            if (announced > 0)
                response.data.reserve(
                    static_cast<std::size_t>(std::min<curl_off_t>(announced, 256 << 20)));
        }
        response.data.insert(response.data.end(), data, data + n);
    } else {
        if (response.body.size() + n > request.small_body_bound) {
            response.overflow = true;
            return 0;
        }
        response.body.append(data, n);
    }
    if (state.success && state.setup->pace_bytes) state.setup->pace_bytes(n);
    return n;
}

std::size_t read_header(char* data, std::size_t size, std::size_t count, void* user) {
    auto& state = *static_cast<TransferState*>(user);
    std::size_t n = size * count;
    state.header_bytes += n;
    if (state.header_bytes > kMaxHeaderBytes) {
        state.response->overflow = true;
        return 0;
    }
    std::string_view line(data, n);
    if (line.starts_with("HTTP/")) {  // a new status line (after a 100 Continue): start over
        state.response->headers.clear();
        state.status_known = false;
        return n;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return n;
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
        value.remove_suffix(1);
    state.response->headers[name] = std::string(value);
    return n;
}

}  // namespace

S3Response perform_transfer(CURL* handle, const TransferSetup& setup, const S3Request& request) {
    S3Response response;
    TransferState state{&setup, &request, &response};
    WriteContext write_context{&state, handle};
    curl_easy_reset(handle);

    std::unique_ptr<curl_slist, SlistDeleter> headers;
    auto add_header = [&](const std::string& line) {
        curl_slist* grown = curl_slist_append(headers.get(), line.c_str());
        if (grown) {
            (void)headers.release();
            headers.reset(grown);
        }
    };
    add_header("x-amz-content-sha256: " +
               (request.body ? request.body->sha256_hex : std::string(kEmptySha256)));
    if (!setup.session_token.empty()) add_header("x-amz-security-token: " + setup.session_token);
    for (const auto& h : request.headers) add_header(h);

    curl_easy_setopt(handle, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(handle, CURLOPT_AWS_SIGV4, setup.sigv4.c_str());
    curl_easy_setopt(handle, CURLOPT_USERNAME, setup.access_key_id.c_str());
    curl_easy_setopt(handle, CURLOPT_PASSWORD, setup.secret_access_key.c_str());
    curl_easy_setopt(handle, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(handle, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT, setup.connect_timeout_seconds);
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_TIME, setup.low_speed_seconds);
    curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 0L);
    // A gateway (or a proxy) that never answers 100 Continue would cost a second a part.
    curl_easy_setopt(handle, CURLOPT_EXPECT_100_TIMEOUT_MS, 100L);
    curl_easy_setopt(handle, CURLOPT_BUFFERSIZE, 512L << 10);
    curl_easy_setopt(handle, CURLOPT_UPLOAD_BUFFERSIZE, 512L << 10);
    if (!setup.ca_file.empty()) curl_easy_setopt(handle, CURLOPT_CAINFO, setup.ca_file.c_str());
    char error_buffer[CURL_ERROR_SIZE] = {};
    curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, write_body);
    curl_easy_setopt(handle, CURLOPT_WRITEDATA, &write_context);
    curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, read_header);
    curl_easy_setopt(handle, CURLOPT_HEADERDATA, &state);

    curl_off_t body_size = 0;
    if (request.body)
        body_size = static_cast<curl_off_t>(request.body->fd >= 0 ? request.body->size
                                                                  : request.body->memory.size());
    if (request.method == "HEAD") {
        curl_easy_setopt(handle, CURLOPT_NOBODY, 1L);
    } else if (request.method == "PUT") {
        curl_easy_setopt(handle, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(handle, CURLOPT_INFILESIZE_LARGE, body_size);
    } else if (request.method == "POST") {
        curl_easy_setopt(handle, CURLOPT_POST, 1L);
        curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE, body_size);
    } else if (request.method != "GET") {
        curl_easy_setopt(handle, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    if (request.body) {
        curl_easy_setopt(handle, CURLOPT_READFUNCTION, read_body);
        curl_easy_setopt(handle, CURLOPT_READDATA, &state);
        curl_easy_setopt(handle, CURLOPT_SEEKFUNCTION, seek_body);
        curl_easy_setopt(handle, CURLOPT_SEEKDATA, &state);
    }

    response.curl = curl_easy_perform(handle);
    if (response.curl != CURLE_OK)
        response.curl_error = error_buffer[0] ? error_buffer : curl_easy_strerror(response.curl);
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &response.status);
    // Nothing of ours may stay pointed at by the handle once this frame is gone.
    curl_easy_setopt(handle, CURLOPT_HTTPHEADER, nullptr);
    curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, nullptr);
    return response;
}

}  // namespace vmshadow::storage
