// SPDX-License-Identifier: MIT
#include "replica/replica_client.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "net/http_client.h"
#include "replica/replica_protocol.h"

namespace vmshadow::replica {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Bounded waits per kind of call: a hello answers at once; a chunk is 16 MiB written to a
// qcow2 overlay; a commit flushes and may merge the oldest point (qemu-img commit); a page of
// hashes reads up to 4 GiB on the replica.
constexpr milliseconds kQuick = seconds(15);
constexpr milliseconds kChunk = seconds(180);
constexpr milliseconds kCommit = seconds(900);
constexpr milliseconds kHashes = seconds(600);
constexpr int kAttempts = 3;

class HttpsReplicaClient final : public ReplicaClient {
  public:
    HttpsReplicaClient(std::string peer, net::HttpEndpoint endpoint)
        : peer_(std::move(peer)), endpoint_(std::move(endpoint)) {}

    const std::string& peer() const override { return peer_; }

    Result<json> hello() override { return json_call("GET", "/hello", "", kQuick, true); }
    Result<json> announce(const std::string& uuid, const json& announcement) override {
        return json_call("PUT", vm(uuid), announcement.dump(), kQuick, false);
    }
    Result<json> vm_state(const std::string& uuid) override {
        return json_call("GET", vm(uuid), "", kQuick, true);
    }
    Result<CycleStart> begin_cycle(const std::string& uuid, const json& begin) override {
        auto response =
            call("POST", vm(uuid) + "/cycles", begin.dump(), "application/json", kQuick, false);
        if (!response) return std::unexpected(response.error());
        json body = json::parse(response->body, nullptr, false);
        if (response->status == 409 && body.is_object() && body.value("resync_required", false)) {
            std::string message = body.value("error", std::string("resync required"));
            return CycleStart{"", true, message};
        }
        auto ok = check(*response, body);
        if (!ok) return std::unexpected(ok.error());
        if (!body.is_object() || !body.contains("cycle") || !body["cycle"].is_string())
            return fail(ErrorKind::io, where() + ": POST cycles answered without a cycle id");
        return CycleStart{body["cycle"].get<std::string>(), false, ""};
    }
    Status put_chunk(const std::string& uuid, const std::string& cycle, std::uint64_t seq,
                     std::string body) override {
        auto response =
            call("PUT", vm(uuid) + "/cycles/" + cycle + "/chunks/" + std::to_string(seq),
                 std::move(body), "application/octet-stream", kChunk, false);
        if (!response) return std::unexpected(response.error());
        json answer = json::parse(response->body, nullptr, false);
        auto ok = check(*response, answer);
        if (!ok) return std::unexpected(ok.error());
        return {};
    }
    Result<json> commit_cycle(const std::string& uuid, const std::string& cycle,
                              const json& digest) override {
        return json_call("POST", vm(uuid) + "/cycles/" + cycle + "/commit", digest.dump(), kCommit,
                         false);
    }
    Status abort_cycle(const std::string& uuid, const std::string& cycle) override {
        auto answer = json_call("DELETE", vm(uuid) + "/cycles/" + cycle, "", kQuick, false);
        if (!answer) return std::unexpected(answer.error());
        return {};
    }
    Result<std::vector<BlockHash>> hashes(const std::string& uuid, const std::string& disk,
                                          std::uint64_t block_size, std::uint64_t first,
                                          std::uint64_t count) override {
        json request = {
            {"disk", disk}, {"block_size", block_size}, {"first", first}, {"count", count}};
        auto response =
            call("POST", vm(uuid) + "/hashes", request.dump(), "application/json", kHashes, true);
        if (!response) return std::unexpected(response.error());
        if (response->status != 200) {
            auto ok = check(*response, json::parse(response->body, nullptr, false));
            if (!ok) return std::unexpected(ok.error());
        }
        if (response->body.size() != count * 32)
            return fail(ErrorKind::io, where() + ": hashes of disk " + disk + " answered " +
                                           std::to_string(response->body.size()) + " bytes for " +
                                           std::to_string(count) + " blocks");
        std::vector<BlockHash> out(count);
        std::memcpy(out.data(), response->body.data(), response->body.size());
        return out;
    }
    Result<json> failover(const std::string& uuid, const json& request) override {
        return json_call("POST", vm(uuid) + "/failover", request.dump(), kCommit, false);
    }
    Result<json> reverse(const std::string& uuid, const json& offer) override {
        return json_call("POST", vm(uuid) + "/reverse", offer.dump(), kCommit, false);
    }
    Result<json> remove(const std::string& uuid) override {
        return json_call("DELETE", vm(uuid), "", kQuick, false);
    }

  private:
    static std::string vm(const std::string& uuid) { return "/vms/" + uuid; }
    std::string where() const { return "replica host " + peer_; }

    Result<net::HttpResponse> call(const std::string& method, const std::string& path,
                                   std::string body, const std::string& content_type,
                                   milliseconds timeout, bool retry) {
        net::HttpClientRequest request;
        request.method = method;
        request.target = std::string(kPrefix) + path;
        request.content_type = content_type;
        request.body = std::move(body);
        request.timeout = timeout;
        request.max_response_bytes = kMaxHashesPerRequest * 32 + 4096;
        for (int attempt = 1;; ++attempt) {
            auto response = net::http_request(endpoint_, request);
            if (response) return response;
            const Error& e = response.error();
            bool transient = e.kind() == ErrorKind::unavailable || e.kind() == ErrorKind::timeout;
            if (!retry || !transient || attempt >= kAttempts) {
                if (e.kind() == ErrorKind::permission)
                    return fail(ErrorKind::permission,
                                where() + ": the TLS handshake failed (" + e.message() +
                                    "); check that both hosts' certificates chain to the "
                                    "[replica] ca and are valid now");
                return fail(e.with_context(where()));
            }
            std::this_thread::sleep_for(seconds(attempt));
        }
    }

    Status check(const net::HttpResponse& response, const json& body) const {
        if (response.status >= 200 && response.status < 300) return {};
        std::string message =
            body.is_object() && body.contains("error") && body["error"].is_string()
                ? body["error"].get<std::string>()
                : "HTTP " + std::to_string(response.status);
        if (response.status == 403)
            return fail(ErrorKind::permission,
                        where() + " refused this host: " + message +
                            " (add this host's certificate subject to its [[replica.allow]])");
        return fail(net::error_kind_for_status(response.status), where() + ": " + message);
    }

    Result<json> json_call(const std::string& method, const std::string& path, std::string body,
                           milliseconds timeout, bool retry) {
        auto response = call(method, path, std::move(body), "application/json", timeout, retry);
        if (!response) return std::unexpected(response.error());
        json answer = json::parse(response->body, nullptr, false);
        auto ok = check(*response, answer);
        if (!ok) return std::unexpected(ok.error());
        if (answer.is_discarded() || !answer.is_object())
            return fail(ErrorKind::io, where() + ": " + method + " " + path +
                                           " answered something other than a JSON object");
        return answer;
    }

    std::string peer_;
    net::HttpEndpoint endpoint_;
};

}  // namespace

Result<std::unique_ptr<ReplicaClient>> connect_replica(const std::string& peer,
                                                       const ReplicaTls& tls) {
    if (peer.empty() || peer.find_first_of("/@?# ") != std::string::npos)
        return fail(ErrorKind::invalid_argument,
                    "replica host \"" + peer + "\": use HOST:PORT, e.g. hostb.example:8471");
    auto endpoint = net::HttpEndpoint::parse("https://" + peer);
    if (!endpoint)
        return fail(ErrorKind::invalid_argument,
                    "replica host \"" + peer + "\": " + endpoint.error().message());
    if (tls.ca_file.empty() || tls.certificate_file.empty() || tls.key_file.empty())
        return fail(ErrorKind::unavailable,
                    "replica is not configured on this host: the [replica] section needs "
                    "certificate, key and ca");
    endpoint->ca_file = tls.ca_file;
    endpoint->client_certificate_file = tls.certificate_file;
    endpoint->client_key_file = tls.key_file;
    return std::unique_ptr<ReplicaClient>(
        std::make_unique<HttpsReplicaClient>(peer, std::move(*endpoint)));
}

}  // namespace vmshadow::replica
