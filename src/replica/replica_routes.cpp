// SPDX-License-Identifier: MIT
#include "replica/replica_routes.h"

#include <algorithm>
#include <charconv>
#include <ranges>

#include "common/time_format.h"
#include "replica/replica_protocol.h"

namespace vmshadow::replica::routes {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 32;

bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_lower_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> parts;
    for (auto part : std::views::split(path, '/')) parts.emplace_back(part.begin(), part.end());
    return parts;
}

std::string printable(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, 80)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
    return out;
}

net::HttpResponse bad(std::string message) {
    return error_response(400, message);
}

// Reads typed fields of one JSON object; the first error is kept and later reads are no-ops,
// so a parser reads every field and checks once.
class Fields {
  public:
    Fields(const json& object, std::string what) : object_(object), what_(std::move(what)) {}

    std::string string(const char* key, std::size_t max_chars, bool allow_empty = false) {
        const json* v = get(key);
        if (!v) return {};
        if (!v->is_string()) {
            wrong(key, "a string", *v);
            return {};
        }
        const auto& s = v->get_ref<const std::string&>();
        if (s.empty() && !allow_empty) problem("field '" + std::string(key) + "' is empty");
        if (s.size() > max_chars)
            problem("field '" + std::string(key) + "' is longer than " + std::to_string(max_chars) +
                    " characters");
        return ok() ? s : std::string();
    }
    std::uint64_t number(const char* key, std::uint64_t max) {
        const json* v = get(key);
        if (!v) return 0;
        if (!v->is_number_unsigned()) {
            wrong(key, "a whole number from 0", *v);
            return 0;
        }
        auto n = v->get<std::uint64_t>();
        if (n > max)
            problem("field '" + std::string(key) + "' is " + std::to_string(n) + ", more than " +
                    std::to_string(max));
        return ok() ? n : 0;
    }
    bool boolean(const char* key) {
        const json* v = get(key);
        if (!v) return false;
        if (!v->is_boolean()) {
            wrong(key, "true or false", *v);
            return false;
        }
        return v->get<bool>();
    }
    const json* array(const char* key, std::size_t max_items) {
        const json* v = get(key);
        if (!v) return nullptr;
        if (!v->is_array()) {
            wrong(key, "an array", *v);
            return nullptr;
        }
        if (v->size() > max_items) {
            problem("field '" + std::string(key) + "' has more than " + std::to_string(max_items) +
                    " items");
            return nullptr;
        }
        return v;
    }
    bool has(const char* key) const { return object_.contains(key); }
    void problem(const std::string& message) {
        if (!error_) error_ = what_ + ": " + message;
    }
    // Takes the first error of a nested object's reader.
    void absorb(const Fields& nested) {
        if (!error_ && nested.error_) error_ = nested.error_;
    }
    bool ok() const { return !error_; }
    Status status() const {
        if (error_) return fail(ErrorKind::invalid_argument, *error_);
        return {};
    }

  private:
    const json* get(const char* key) {
        if (error_) return nullptr;
        auto it = object_.find(key);
        if (it == object_.end()) {
            problem("field '" + std::string(key) + "' is missing");
            return nullptr;
        }
        return &*it;
    }
    void wrong(const char* key, const char* expected, const json& got) {
        problem("field '" + std::string(key) + "' must be " + expected + ", got " +
                got.type_name());
    }
    const json& object_;
    std::string what_;
    std::optional<std::string> error_;
};

constexpr std::uint64_t kMaxDiskBytes = std::uint64_t{1} << 50;  // 1 PiB

std::vector<StoreDisk> read_disks(Fields& fields, const char* what) {
    std::vector<StoreDisk> disks;
    const json* list = fields.array("disks", kMaxDisks);
    if (!list) return disks;
    if (list->empty()) fields.problem("field 'disks' is empty");
    for (const auto& item : *list) {
        if (!item.is_object()) {
            fields.problem("every item of 'disks' must be an object");
            break;
        }
        Fields disk(item, std::string(what) + ": disks[" + std::to_string(disks.size()) + "]");
        StoreDisk d{disk.string("target", 32), disk.number("size", kMaxDiskBytes)};
        if (disk.ok() && !is_disk_target(d.target))
            disk.problem("target '" + printable(d.target) + "' is not a disk target like vda");
        if (disk.ok() && (d.size == 0 || d.size % 512 != 0))
            disk.problem("size " + std::to_string(d.size) + " is not a positive multiple of 512");
        if (disk.ok() &&
            std::ranges::any_of(disks, [&](const StoreDisk& x) { return x.target == d.target; }))
            disk.problem("target " + d.target + " is listed twice");
        fields.absorb(disk);
        if (!fields.ok()) break;
        disks.push_back(std::move(d));
    }
    return disks;
}

}  // namespace

bool is_uuid(std::string_view text) {
    if (text.size() != 36) return false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? text[i] != '-' : !is_lower_hex(text[i])) return false;
    }
    return true;
}

bool is_cycle_id(std::string_view text) {
    return !text.empty() && text.size() <= 64 && std::ranges::all_of(text, is_hex);
}

bool is_token(std::string_view text) {
    return !text.empty() && text.size() <= kMaxTokenChars && std::ranges::all_of(text, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.' || c == ':' || c == '+';
    });
}

bool is_disk_target(std::string_view text) {
    return !text.empty() && text.size() <= 32 && text[0] >= 'a' && text[0] <= 'z' &&
           std::ranges::all_of(
               text, [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); });
}

bool is_vm_name(std::string_view text) {
    return !text.empty() && text.size() <= kMaxNameChars && text[0] != '.' &&
           std::ranges::none_of(text, [](char c) {
               auto u = static_cast<unsigned char>(c);
               return c == '/' || u < 0x20 || u == 0x7f;
           });
}

std::expected<Route, net::HttpResponse> match(std::string_view method, std::string_view path) {
    if (!path.starts_with(kPrefix) || (path.size() > kPrefix.size() && path[kPrefix.size()] != '/'))
        return std::unexpected(error_response(404, "no such route: " + printable(path)));
    auto parts = split_path(path.substr(kPrefix.size()));  // "", "vms", uuid, ...
    auto not_found = [&] {
        return std::unexpected(error_response(404, "no such route: " + printable(path)));
    };
    auto wrong_method = [&] {
        return std::unexpected(error_response(
            405, "method " + printable(method) + " is not allowed on " + printable(path)));
    };
    auto want = [&](std::string_view m, RouteKind kind,
                    Route route) -> std::expected<Route, net::HttpResponse> {
        if (method != m) return wrong_method();
        route.kind = kind;
        return route;
    };
    if (parts.size() == 2 && parts[1] == "hello") return want("GET", RouteKind::hello, {});
    if (parts.size() < 3 || parts[1] != "vms") return not_found();
    Route route;
    if (!is_uuid(parts[2]))
        return std::unexpected(
            bad("'" + printable(parts[2]) + "' is not a VM UUID (lower-case 8-4-4-4-12 hex)"));
    route.uuid = parts[2];
    if (parts.size() == 3) {
        if (method == "PUT") return want("PUT", RouteKind::put_vm, route);
        if (method == "GET") return want("GET", RouteKind::get_vm, route);
        return want("DELETE", RouteKind::delete_vm, route);
    }
    if (parts.size() == 4 && parts[3] == "hashes") return want("POST", RouteKind::hashes, route);
    if (parts.size() == 4 && parts[3] == "failover")
        return want("POST", RouteKind::failover, route);
    if (parts.size() == 4 && parts[3] == "reverse") return want("POST", RouteKind::reverse, route);
    if (parts.size() == 4 && parts[3] == "cycles")
        return want("POST", RouteKind::begin_cycle, route);
    if (parts.size() < 5 || parts[3] != "cycles") return not_found();
    if (!is_cycle_id(parts[4]))
        return std::unexpected(
            bad("'" + printable(parts[4]) + "' is not a cycle id (1 to 64 hex characters)"));
    route.cycle_id = parts[4];
    if (parts.size() == 5) return want("DELETE", RouteKind::abort_cycle, route);
    if (parts.size() == 6 && parts[5] == "commit")
        return want("POST", RouteKind::commit_cycle, route);
    if (parts.size() == 7 && parts[5] == "chunks") {
        std::string_view text = parts[6];
        std::uint64_t seq = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seq);
        if (text.empty() || text.size() > 8 || ec != std::errc() ||
            end != text.data() + text.size() || seq > kMaxChunkSeq)
            return std::unexpected(bad("chunk seq '" + printable(text) +
                                       "' is not a whole number from 0 to 10000000"));
        route.seq = seq;
        return want("PUT", RouteKind::put_chunk, route);
    }
    return not_found();
}

Result<json> parse_object(std::string_view body, std::size_t max_bytes) {
    struct TooDeep {};
    if (body.size() > max_bytes)
        return fail(ErrorKind::invalid_argument, "request body: " + std::to_string(body.size()) +
                                                     " bytes, more than the " +
                                                     std::to_string(max_bytes) + " allowed");
    json value;
    try {
        value = json::parse(body, [](int depth, json::parse_event_t, json&) {
            if (depth > kMaxDepth) throw TooDeep{};
            return true;
        });
    } catch (const TooDeep&) {
        return fail(ErrorKind::invalid_argument, "request body: nested too deep");
    } catch (const json::exception& e) {
        return fail(ErrorKind::invalid_argument,
                    std::string("request body: malformed JSON (") + e.what() + ")");
    }
    if (!value.is_object())
        return fail(ErrorKind::invalid_argument,
                    std::string("request body: expected a JSON object, got ") + value.type_name());
    return value;
}

Result<Announcement> parse_announcement(const json& body) {
    Fields f(body, "VM announcement");
    Announcement a;
    a.name = f.string("name", kMaxNameChars);
    a.uuid = f.string("uuid", 36);
    a.domain_xml = f.string("domain_xml", kMaxJsonBody);
    a.disks = read_disks(f, "VM announcement");
    a.history = static_cast<unsigned>(f.number("history", kMaxHistory));
    if (f.has("primary_endpoint")) a.primary_endpoint = f.string("primary_endpoint", 255, true);
    if (auto it = body.find("seed"); f.ok() && it != body.end() && !it->is_null()) {
        if (!it->is_object())
            return fail(ErrorKind::invalid_argument,
                        "VM announcement: field 'seed' is not an object");
        Fields s(*it, "VM announcement's seed");
        SeedSpec seed{s.string("repository", 4096), s.string("point", 256)};
        if (s.ok() && !seed.repository.starts_with("/"))
            s.problem("repository '" + printable(seed.repository) + "' is not an absolute path");
        if (auto st = s.status(); !st) return fail(st.error());
        a.seed = std::move(seed);
    }
    if (f.ok() && !is_vm_name(a.name))
        f.problem("name '" + printable(a.name) + "' cannot be a folder name");
    if (f.ok() && !is_uuid(a.uuid)) f.problem("uuid '" + printable(a.uuid) + "' is not a UUID");
    if (auto s = f.status(); !s) return fail(s.error());
    return a;
}

Result<BeginRequest> parse_begin(const json& body) {
    Fields f(body, "cycle begin");
    BeginRequest b;
    b.header.id = f.string("id", 64);
    b.header.full = f.boolean("full");
    // A full cycle has no base, nor has a resync (its differences against the latest point):
    // "", null or absent.
    if (auto it = body.find("base_token"); it != body.end() && !it->is_null())
        b.header.base_token = f.string("base_token", kMaxTokenChars, true);
    b.header.token = f.string("token", kMaxTokenChars);
    b.header.time = f.string("time", 64);
    b.header.consistency = f.string("consistency", 16);
    b.disks = read_disks(f, "cycle begin");
    if (f.ok() && !is_cycle_id(b.header.id))
        f.problem("id '" + printable(b.header.id) + "' is not 1 to 64 hex characters");
    if (f.ok() && !is_token(b.header.token))
        f.problem("token '" + printable(b.header.token) + "' is not a checkpoint name");
    if (f.ok() && !b.header.base_token.empty() && !is_token(b.header.base_token))
        f.problem("base_token '" + printable(b.header.base_token) + "' is not a checkpoint name");
    if (f.ok() && !parse_iso8601_utc(b.header.time))
        f.problem("time '" + printable(b.header.time) + "' is not an ISO 8601 UTC time");
    if (f.ok() && b.header.consistency != "application" && b.header.consistency != "crash")
        f.problem("consistency must be \"application\" or \"crash\"");
    if (auto s = f.status(); !s) return fail(s.error());
    return b;
}

Result<CommitRequest> parse_commit(const json& body) {
    Fields f(body, "cycle commit");
    CommitRequest c;
    c.chunks = f.number("chunks", kMaxChunkSeq + 1);
    c.frames = f.number("frames", std::uint64_t{1} << 40);
    c.sha256 = f.string("sha256", 64);
    if (f.ok() && (c.sha256.size() != 64 || !std::ranges::all_of(c.sha256, is_lower_hex)))
        f.problem("sha256 must be 64 lower-case hex characters");
    if (auto s = f.status(); !s) return fail(s.error());
    return c;
}

Result<HashesRequest> parse_hashes(const json& body) {
    Fields f(body, "hashes request");
    HashesRequest h;
    auto disk = body.find("disk");
    if (disk != body.end() && disk->is_string()) {
        h.target = f.string("disk", 32);
        if (f.ok() && !is_disk_target(*h.target)) f.problem("disk is not a disk target like vda");
    } else {
        h.index = f.number("disk", kMaxDisks - 1);
    }
    h.block_size = f.number("block_size", 4u << 20);
    h.first = f.number("first", std::uint64_t{1} << 40);
    h.count = f.number("count", kMaxHashesPerRequest);
    if (f.ok() && (h.block_size < (64u << 10) || (h.block_size & (h.block_size - 1)) != 0))
        f.problem("block_size must be a power of two from 65536 to 4194304");
    if (f.ok() && h.count == 0) f.problem("count must be at least 1");
    if (auto s = f.status(); !s) return fail(s.error());
    return h;
}

Result<bool> parse_failover(const json& body) {
    Fields f(body, "failover request");
    bool planned = f.boolean("planned");
    if (auto s = f.status(); !s) return fail(s.error());
    return planned;
}

Result<ReverseOffer> parse_reverse(const json& body) {
    auto vm = parse_announcement(body);
    if (!vm) return fail(vm.error().with_context("reverse offer"));
    Fields f(body, "reverse offer");
    ReverseOffer offer{std::move(*vm), f.string("token", kMaxTokenChars), f.string("time", 64)};
    if (f.ok() && !is_token(offer.token))
        f.problem("token '" + printable(offer.token) + "' is not a checkpoint name");
    if (f.ok() && !parse_iso8601_utc(offer.time))
        f.problem("time '" + printable(offer.time) + "' is not an ISO 8601 UTC time");
    if (auto s = f.status(); !s) return fail(s.error());
    return offer;
}

bool same_disks(const std::vector<StoreDisk>& a, const std::vector<StoreDisk>& b) {
    return std::ranges::equal(a, b, [](const StoreDisk& x, const StoreDisk& y) {
        return x.target == y.target && x.size == y.size;
    });
}

std::string describe_disks(const std::vector<StoreDisk>& disks) {
    std::string out;
    for (const auto& d : disks)
        out += (out.empty() ? "" : ", ") + d.target + " " + std::to_string(d.size);
    return out.empty() ? "none" : out;
}

json point_json(const RecoveryPoint& point) {
    return {{"seq", point.seq},
            {"token", point.token},
            {"time", point.time},
            {"consistency", point.consistency}};
}

json state_json(const ReplicaStore& store) {
    const auto& id = store.identity();
    json points = json::array();
    for (const auto& p : store.points()) points.push_back(point_json(p));
    const RecoveryPoint* latest = store.latest();
    json disks = json::array();
    for (const auto& d : id.disks) disks.push_back({{"target", d.target}, {"size", d.size}});
    return {{"name", id.vm_name},
            {"uuid", id.vm_uuid},
            {"disks", std::move(disks)},
            {"state", store.state().empty() ? "replicating" : store.state()},
            {"history", id.history},
            {"latest", latest ? point_json(*latest) : json(nullptr)},
            {"points", std::move(points)}};
}

net::HttpResponse json_response(int status, const json& body) {
    net::HttpResponse response;
    response.status = status;
    // Invalid UTF-8 (say, in a path echoed in an error) is replaced, never thrown.
    response.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    return response;
}

net::HttpResponse error_response(const Error& error, const json& extra) {
    json body = {{"error", error.message()}, {"kind", kind_name(error.kind())}};
    if (extra.is_object()) body.update(extra);
    return json_response(net::http_status_for(error.kind()), body);
}

net::HttpResponse error_response(int status, const std::string& message) {
    return json_response(status, {{"error", message}});
}

}  // namespace vmshadow::replica::routes
