// SPDX-License-Identifier: MIT
#include "replica/replica_record.h"

#include <cctype>
#include <nlohmann/json.hpp>

namespace vmshadow::replica::detail {
namespace {

using nlohmann::json;

constexpr std::string_view kFormat = "vmshadow-replica-store";
constexpr int kVersion = 1;

bool all_digits(std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

json layer_set_json(const LayerSet& l) {
    json j{{"files", l.files}, {"sizes", l.sizes}};
    if (!l.backing.empty()) j["backing"] = l.backing;
    return j;
}

// Throws json::exception on a wrong type; the caller turns that into an error.
StoreIdentity identity_from(const json& j) {
    StoreIdentity id;
    id.vm_name = j.at("vm_name").get<std::string>();
    id.vm_uuid = j.at("vm_uuid").get<std::string>();
    id.primary_subject = j.at("primary_subject").get<std::string>();
    id.primary_endpoint = j.at("primary_endpoint").get<std::string>();
    id.domain_xml = j.at("domain_xml").get<std::string>();
    id.history = j.at("history").get<unsigned>();
    for (const auto& d : j.at("disks"))
        id.disks.push_back({d.at("target").get<std::string>(), d.at("size").get<std::uint64_t>()});
    return id;
}

Status check_record(const StoreRecord& r, const std::string& file) {
    auto bad = [&](const std::string& why) {
        return fail(ErrorKind::corruption, "replica record " + file + " is damaged: " + why);
    };
    if (r.identity.history > kMaxHistory) return bad("history above 24");
    for (const auto& d : r.identity.disks)
        if (!valid_target(d.target)) return bad("disk target '" + d.target + "'");
    for (std::size_t i = 0; i < r.stack.size(); ++i) {
        const auto& l = r.stack[i];
        if (l.files.empty() || l.sizes.size() != l.files.size()) return bad("a layer set");
        if (!l.backing.empty() && (i != 0 || l.backing.size() != l.files.size()))
            return bad("a backing image list");
        for (const auto& b : l.backing)
            if (!std::filesystem::path(b).is_absolute()) return bad("backing image '" + b + "'");
        for (const auto& f : l.files)
            if (!valid_layer_name(f) || f.starts_with("test-") || f.starts_with("live-"))
                return bad("layer name '" + f + "'");
    }
    std::size_t previous = 0;
    for (std::size_t i = 0; i < r.points.size(); ++i) {
        const auto& p = r.points[i];
        std::size_t at = stack_index(r, p);
        if (at == std::string::npos) return bad("point " + std::to_string(p.seq) + "'s layers");
        if (i > 0 && (at <= previous || p.seq <= r.points[i - 1].seq))
            return bad("points out of order");
        previous = at;
    }
    if (!r.points.empty() && stack_index(r, r.points.back()) + 1 != r.stack.size())
        return bad("layers above the latest point");
    if (r.points.empty() && !r.stack.empty()) return bad("layers without a point");
    for (const auto& [kind, o] : r.overlays) {
        if (kind != "test" && kind != "live") return bad("overlay kind '" + kind + "'");
        bool held = std::any_of(r.points.begin(), r.points.end(),
                                [&](const RecoveryPoint& p) { return p.seq == o.seq; });
        if (!held) return bad(kind + " overlays above a point not held");
        for (const auto& f : o.files)
            if (!valid_layer_name(f) || !f.starts_with(kind + "-"))
                return bad("overlay name '" + f + "'");
    }
    return {};
}

}  // namespace

bool valid_target(std::string_view target) {
    return !target.empty() && target.size() <= 64 &&
           std::all_of(target.begin(), target.end(),
                       [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '-'; });
}

bool valid_layer_name(std::string_view name) {
    constexpr std::string_view suffix = ".qcow2";
    if (!name.ends_with(suffix)) return false;
    name.remove_suffix(suffix.size());
    auto dash = name.find('-');
    if (dash == std::string_view::npos || !valid_target(name.substr(dash + 1))) return false;
    std::string_view kind = name.substr(0, dash);
    return kind == "test" || kind == "live" ||
           (kind.size() > 1 && kind[0] == 'p' && all_digits(kind.substr(1)));
}

std::string layer_name(std::uint64_t seq, const std::string& target) {
    return "p" + std::to_string(seq) + "-" + target + ".qcow2";
}

std::size_t stack_index(const StoreRecord& record, const RecoveryPoint& point) {
    for (std::size_t i = 0; i < record.stack.size(); ++i)
        if (record.stack[i].files == point.layers) return i;
    return std::string::npos;
}

std::string record_to_json(const StoreRecord& r) {
    const StoreIdentity& id = r.identity;
    json disks = json::array();
    for (const auto& d : id.disks) disks.push_back({{"target", d.target}, {"size", d.size}});
    json stack = json::array();
    for (const auto& l : r.stack) stack.push_back(layer_set_json(l));
    json points = json::array();
    for (const auto& p : r.points)
        points.push_back({{"seq", p.seq},
                          {"token", p.token},
                          {"time", p.time},
                          {"consistency", p.consistency},
                          {"layers", p.layers}});
    json overlays = json::object();
    for (const auto& [kind, o] : r.overlays) overlays[kind] = {{"seq", o.seq}, {"files", o.files}};
    json j{{"format", kFormat},
           {"version", kVersion},
           {"identity",
            {{"vm_name", id.vm_name},
             {"vm_uuid", id.vm_uuid},
             {"primary_subject", id.primary_subject},
             {"primary_endpoint", id.primary_endpoint},
             {"domain_xml", id.domain_xml},
             {"history", id.history},
             {"disks", disks}}},
           {"state", r.state},
           {"next_seq", r.next_seq},
           {"stack", stack},
           {"points", points},
           {"overlays", overlays}};
    return j.dump(2) + "\n";
}

Result<StoreRecord> parse_record(std::string_view text, const std::string& file) {
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return fail(ErrorKind::corruption, "replica record " + file + " is not JSON");
    if (!j.contains("format") || j["format"] != kFormat)
        return fail(ErrorKind::corruption, file + " is not a vmshadow replica record");
    if (!j.contains("version") || j["version"] != kVersion)
        return fail(ErrorKind::unsupported,
                    "replica record " + file + " has a version this vmshadow does not know (" +
                        (j.contains("version") ? j["version"].dump() : "none") + ")");
    StoreRecord r;
    try {
        r.identity = identity_from(j.at("identity"));
        r.state = j.at("state").get<std::string>();
        r.next_seq = j.at("next_seq").get<std::uint64_t>();
        for (const auto& l : j.at("stack")) {
            LayerSet set{l.at("files").get<std::vector<std::string>>(),
                         l.at("sizes").get<std::vector<std::uint64_t>>(),
                         {}};
            if (l.contains("backing")) set.backing = l["backing"].get<std::vector<std::string>>();
            r.stack.push_back(std::move(set));
        }
        for (const auto& p : j.at("points"))
            r.points.push_back({p.at("seq").get<std::uint64_t>(), p.at("token").get<std::string>(),
                                p.at("time").get<std::string>(),
                                p.at("consistency").get<std::string>(),
                                p.at("layers").get<std::vector<std::string>>()});
        for (const auto& [kind, o] : j.at("overlays").items())
            r.overlays[kind] = {o.at("seq").get<std::uint64_t>(),
                                o.at("files").get<std::vector<std::string>>()};
    } catch (const json::exception& e) {
        return fail(ErrorKind::corruption,
                    "replica record " + file + " is damaged: " + std::string(e.what()));
    }
    if (auto ok = check_record(r, file); !ok) return fail(ok.error());
    return r;
}

}  // namespace vmshadow::replica::detail
