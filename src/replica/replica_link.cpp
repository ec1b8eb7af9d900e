// SPDX-License-Identifier: MIT
#include "replica/replica_link.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "common/atomic_file.h"
#include "common/time_format.h"
#include "replica/replica_host.h"

namespace vmshadow::replica {
namespace {

using json = nlohmann::json;

// A record holds at most 4096 cycles of ~120 bytes and a checkpoint XML: far below this.
constexpr std::uintmax_t kMaxLinkFileBytes = 8u << 20;
constexpr std::size_t kMaxText = 4096;
constexpr std::size_t kMaxXml = 1u << 20;

const std::set<std::string, std::less<>> kStates = {"initial", "normal", "paused",
                                                    "resync-required", "failed-over"};

// Reads one record; the first bad field throws Bad, which link_from_json turns into an error
// naming the file and the field.
struct Bad {
    std::string field, what;
};

class Fields {
  public:
    explicit Fields(const json& j) : j_(j) {}
    const json* find(const char* key) const {
        auto it = j_.find(key);
        return it == j_.end() || it->is_null() ? nullptr : &*it;
    }
    std::string text(const char* key, std::size_t max = kMaxText, bool required = false) const {
        const json* v = find(key);
        if (!v) {
            if (required) throw Bad{key, "missing"};
            return {};
        }
        if (!v->is_string()) throw Bad{key, "not a string"};
        const auto& s = v->get_ref<const std::string&>();
        if (s.size() > max) throw Bad{key, "longer than " + std::to_string(max) + " bytes"};
        return s;
    }
    std::uint64_t number(const char* key, std::uint64_t max) const {
        const json* v = find(key);
        if (!v) return 0;
        if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<std::int64_t>() >= 0))
            throw Bad{key, "not a non-negative integer"};
        auto n = v->get<std::uint64_t>();
        if (n > max) throw Bad{key, "out of range (at most " + std::to_string(max) + ")"};
        return n;
    }
    std::optional<std::int64_t> time(const char* key) const {
        const json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_number_integer()) throw Bad{key, "not an integer time"};
        return v->get<std::int64_t>();
    }

  private:
    const json& j_;
};

bool lower_hex(std::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool uuid_like(std::string_view s) {
    if (s.size() != 36) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex) return false;
    }
    return true;
}

constexpr std::string_view kResults[] = {"ok", "failed", "missed"};

json cycle_to_json(const CycleRecord& c) {
    json j = {{"started", unix_seconds(c.started)},
              {"seconds", c.seconds},
              {"bytes", c.bytes_sent},
              {"result", kResults[static_cast<int>(c.result)]}};
    if (c.point_time) j["point_time"] = unix_seconds(*c.point_time);
    return j;
}

Clock::time_point from_unix(std::int64_t s) {
    return Clock::time_point(std::chrono::seconds(s));
}

CycleRecord cycle_from_json(const json& j, std::size_t index) {
    std::string field = "cycles[" + std::to_string(index) + "]";
    if (!j.is_object()) throw Bad{field, "not an object"};
    Fields f(j);
    CycleRecord c;
    auto started = f.time("started");
    if (!started) throw Bad{field + ".started", "missing"};
    c.started = from_unix(*started);
    const json* seconds = f.find("seconds");
    if (seconds &&
        (!seconds->is_number() || seconds->get<double>() < 0 || seconds->get<double>() > 1e7))
        throw Bad{field + ".seconds", "not a duration"};
    if (seconds) c.seconds = seconds->get<double>();
    c.bytes_sent = f.number("bytes", UINT64_MAX);
    std::string result = f.text("result", 16, true);
    auto it = std::find(std::begin(kResults), std::end(kResults), result);
    if (it == std::end(kResults)) throw Bad{field + ".result", "\"" + result + "\" is unknown"};
    c.result = static_cast<CycleRecord::Result>(it - std::begin(kResults));
    if (auto p = f.time("point_time")) c.point_time = from_unix(*p);
    return c;
}

LinkRecord read_link(const json& j) {
    if (!j.is_object()) throw Bad{"", "not a JSON object"};
    Fields f(j);
    LinkRecord link;
    LinkSpec& s = link.spec;
    s.vm = f.text("vm", 256, true);
    link.uuid = f.text("uuid", 64, true);
    if (!uuid_like(link.uuid)) throw Bad{"uuid", "not a UUID"};
    s.to = f.text("to", 300, true);
    s.interval = std::chrono::seconds(f.number("interval_s", 86400));
    if (s.interval != std::chrono::seconds(30) && s.interval != std::chrono::seconds(300) &&
        s.interval != std::chrono::seconds(900))
        throw Bad{"interval_s", "not 30, 300 or 900"};
    s.history = static_cast<unsigned>(f.number("history", 24));
    s.app_consistent_every_h = static_cast<unsigned>(f.number("app_consistent_every_h", 24));
    if (const json* ex = f.find("exclude_disks")) {
        if (!ex->is_array() || ex->size() > 64) throw Bad{"exclude_disks", "not a list of disks"};
        for (const auto& d : *ex) {
            if (!d.is_string() || d.get_ref<const std::string&>().size() > 64)
                throw Bad{"exclude_disks", "not a list of disks"};
            s.exclude_disks.push_back(d.get<std::string>());
        }
    }
    s.bandwidth_mib = static_cast<unsigned>(f.number("bandwidth_mib", 100000));
    if (f.find("start_at")) s.start_at = f.text("start_at", 64);
    auto initial = parse_initial(f.text("initial", 16));
    if (!f.text("initial", 16).empty() && !initial) throw Bad{"initial", "unknown"};
    if (initial) s.initial = *initial;
    s.seed_repository = f.text("seed_repository");
    s.seed_point = f.text("seed_point", 256);
    link.chain_id = f.text("chain_id", 64, true);
    // Ours are 16; a reverse link takes the replica host's failover chain (8 at least).
    if (link.chain_id.size() < 8 || !lower_hex(link.chain_id))
        throw Bad{"chain_id", "not 8 to 64 lower-case hex digits"};
    link.state = f.text("state", 32, true);
    if (!kStates.contains(link.state)) throw Bad{"state", "\"" + link.state + "\" is unknown"};
    link.paused_from = f.text("paused_from", 32);
    if (!link.paused_from.empty() &&
        (!kStates.contains(link.paused_from) || link.paused_from == "paused"))
        throw Bad{"paused_from", "\"" + link.paused_from + "\" is unknown"};
    link.checkpoint = f.text("checkpoint", 256);
    link.checkpoint_xml = f.text("checkpoint_xml", kMaxXml);
    link.point_time = f.text("point_time", 64);
    link.last_attempt = f.time("last_attempt");
    link.cycle_running = f.time("cycle_running");
    link.last_app_consistent = f.time("last_app_consistent");
    link.exported_token = f.text("exported_token", 256);
    link.exported_checkpoint_xml = f.text("exported_checkpoint_xml", kMaxXml);
    link.last_error = f.text("last_error");
    link.bytes_sent_total = f.number("bytes_sent_total", UINT64_MAX);
    link.cycles_total = f.number("cycles_total", UINT64_MAX);
    if (const json* cycles = f.find("cycles")) {
        if (!cycles->is_array() || cycles->size() > 4096)
            throw Bad{"cycles", "not a list of at most 4096 cycles"};
        for (std::size_t i = 0; i < cycles->size(); ++i)
            link.cycles.push_back(cycle_from_json((*cycles)[i], i));
    }
    return link;
}

}  // namespace

std::string initial_name(LinkSpec::Initial initial) {
    switch (initial) {
        case LinkSpec::Initial::offline:
            return "offline";
        case LinkSpec::Initial::repository:
            return "repository";
        case LinkSpec::Initial::network:
            break;
    }
    return "network";
}

std::optional<LinkSpec::Initial> parse_initial(std::string_view text) {
    if (text == "network") return LinkSpec::Initial::network;
    if (text == "offline") return LinkSpec::Initial::offline;
    if (text == "repository") return LinkSpec::Initial::repository;
    return std::nullopt;
}

json link_to_json(const LinkRecord& link) {
    const LinkSpec& s = link.spec;
    json j = {{"version", kLinkVersion},
              {"vm", s.vm},
              {"uuid", link.uuid},
              {"to", s.to},
              {"interval_s", s.interval.count()},
              {"history", s.history},
              {"app_consistent_every_h", s.app_consistent_every_h},
              {"exclude_disks", s.exclude_disks},
              {"bandwidth_mib", s.bandwidth_mib},
              {"initial", initial_name(s.initial)},
              {"seed_repository", s.seed_repository},
              {"seed_point", s.seed_point},
              {"chain_id", link.chain_id},
              {"state", link.state},
              {"paused_from", link.paused_from},
              {"checkpoint", link.checkpoint},
              {"checkpoint_xml", link.checkpoint_xml},
              {"point_time", link.point_time},
              {"exported_token", link.exported_token},
              {"exported_checkpoint_xml", link.exported_checkpoint_xml},
              {"last_error", link.last_error},
              {"bytes_sent_total", link.bytes_sent_total},
              {"cycles_total", link.cycles_total}};
    if (s.start_at) j["start_at"] = *s.start_at;
    if (link.last_attempt) j["last_attempt"] = *link.last_attempt;
    if (link.cycle_running) j["cycle_running"] = *link.cycle_running;
    if (link.last_app_consistent) j["last_app_consistent"] = *link.last_app_consistent;
    json cycles = json::array();
    for (const auto& c : link.cycles) cycles.push_back(cycle_to_json(c));
    j["cycles"] = std::move(cycles);
    return j;
}

Result<LinkRecord> link_from_json(const json& j, const std::string& what) {
    if (j.is_object()) {
        auto v = j.find("version");
        if (v == j.end() || !v->is_number_integer())
            return fail(ErrorKind::corruption, what + ": not a replica link record (no version)");
        if (v->get<std::int64_t>() > kLinkVersion)
            return fail(ErrorKind::unsupported,
                        what + ": link record version " + std::to_string(v->get<std::int64_t>()) +
                            " is newer than this vmshadow reads (" + std::to_string(kLinkVersion) +
                            "): upgrade vmshadow");
        if (v->get<std::int64_t>() < 1)
            return fail(ErrorKind::corruption, what + ": bad link record version");
    }
    try {
        return read_link(j);
    } catch (const Bad& bad) {
        return fail(ErrorKind::corruption,
                    what + ": " + (bad.field.empty() ? "" : bad.field + ": ") + bad.what);
    } catch (const json::exception& e) {
        return fail(ErrorKind::corruption, what + ": " + e.what());
    }
}

std::filesystem::path link_path(const std::filesystem::path& dir, const std::string& uuid) {
    return dir / (uuid + ".json");
}

Result<LinkRecord> load_link(const std::filesystem::path& file) {
    std::error_code ec;
    auto size = std::filesystem::file_size(file, ec);
    if (ec)
        return fail(ErrorKind::not_found, "replica link " + file.string() + ": " + ec.message());
    if (size > kMaxLinkFileBytes)
        return fail(ErrorKind::corruption, "replica link " + file.string() + " is " +
                                               std::to_string(size) + " bytes: not a link record");
    std::ifstream in(file, std::ios::binary);
    if (!in) return fail(ErrorKind::io, "cannot read replica link " + file.string());
    std::stringstream buffer;
    buffer << in.rdbuf();
    json j = json::parse(buffer.str(), nullptr, false);
    if (j.is_discarded())
        return fail(ErrorKind::corruption, "replica link " + file.string() +
                                               ": damaged (not JSON); remove it and "
                                               "enable replication again");
    return link_from_json(j, "replica link " + file.string());
}

Status save_link(const std::filesystem::path& file, const LinkRecord& link) {
    std::error_code ec;
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) return fail(ErrorKind::io, file.parent_path().string() + ": " + ec.message());
    return write_file_atomically(file, link_to_json(link).dump(1) + "\n", 0600);
}

LinkRecord reverse_link(const ReverseSource& source, const std::optional<LinkSpec>& earlier) {
    LinkRecord link;
    if (earlier) link.spec = *earlier;
    link.spec.vm = source.vm;
    link.spec.to = source.peer_endpoint;
    link.spec.history = source.history;
    link.spec.start_at.reset();
    link.spec.initial = LinkSpec::Initial::network;
    link.spec.seed_repository.clear();
    link.spec.seed_point.clear();
    link.uuid = source.uuid;
    link.chain_id = source.chain_id;
    link.checkpoint = source.token;
    link.checkpoint_xml = source.checkpoint_xml;
    link.point_time = source.time;
    link.state = source.planned ? "normal" : "resync-required";
    return link;
}

}  // namespace vmshadow::replica
