// SPDX-License-Identifier: MIT
#include "cli/replica_views.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "cli/daemon_views.h"
#include "cli/names.h"
#include "common/byte_size.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

const json& replica_list(const json& answer) {
    static const json kEmpty = json::array();
    if (answer.is_array()) return answer;
    if (!answer.is_object()) return kEmpty;
    auto it = answer.find("replicas");
    return it != answer.end() && it->is_array() ? *it : kEmpty;
}

std::optional<double> number_field(const json& j, std::string_view key) {
    if (!j.is_object()) return std::nullopt;
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return std::nullopt;
    double v = it->get<double>();
    return std::isfinite(v) ? std::optional(v) : std::nullopt;
}

std::string or_dash(std::string s) {
    return s.empty() ? "-" : s;
}

std::string seconds_text(std::optional<double> s) {
    if (!s) return "-";
    if (*s < 60) {
        char buf[32];
        std::snprintf(buf, sizeof buf, *s < 10 ? "%.1f s" : "%.0f s", std::max(*s, 0.0));
        return buf;
    }
    return format_age(static_cast<std::int64_t>(std::llround(*s)));
}

std::string time_of(const json& entry, std::string_view key) {
    if (!entry.is_object()) return "-";
    auto it = entry.find(key);
    return it == entry.end() || it->is_null() ? "-" : format_time(*it);
}

}  // namespace

std::optional<std::int64_t> parse_replica_interval(std::string_view text) {
    if (text == "30s") return 30;
    if (text == "5m") return 300;
    if (text == "15m") return 900;
    return std::nullopt;
}

std::string replica_table(const json& replicas) {
    const json& list = replica_list(replicas);
    if (list.empty()) return "No replication is configured on this host.\n";
    std::vector<std::vector<std::string>> rows;
    std::string notes;
    for (const auto& r : list) {
        auto sent = int_field(r, "bytes_sent");
        auto missed = int_field(r, "missed_cycles");
        auto avg = number_field(r, "avg_cycle_s");
        auto max = number_field(r, "max_cycle_s");
        rows.push_back({or_dash(text_field(r, "vm")), or_dash(text_field(r, "role")),
                        or_dash(text_field(r, "peer")), or_dash(text_field(r, "state")),
                        time_of(r, "last_cycle"), seconds_text(number_field(r, "rpo_s")),
                        seconds_text(avg) + " / " + seconds_text(max),
                        sent && *sent >= 0 ? format_bytes(static_cast<std::uint64_t>(*sent)) : "-",
                        missed ? std::to_string(*missed) : "-"});
        for (const char* key : {"reason", "last_error"}) {
            auto text = text_field(r, key);
            if (!text.empty())
                notes += printable(or_dash(text_field(r, "vm"))) + ": " +
                         printable(text_field(r, "state")) + ": " + printable(text) + "\n";
        }
    }
    return render_table({"VM", "ROLE", "PEER", "STATE", "LAST-CYCLE", "RPO", "AVG/MAX-CYCLE",
                         "SENT", "MISSED"},
                        rows) +
           notes;
}

std::string replica_points_table(const json& points) {
    static const json kEmpty = json::array();
    const json* list = &kEmpty;
    if (points.is_object())
        if (auto it = points.find("points"); it != points.end() && it->is_array()) list = &*it;
    if (list->empty()) return "No recovery points yet.\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : *list) {
        auto seq = int_field(p, "seq");
        rows.push_back({seq ? std::to_string(*seq) : "-", time_of(p, "time"),
                        or_dash(text_field(p, "consistency")), or_dash(text_field(p, "token"))});
    }
    return render_table({"SEQ", "TIME", "CONSISTENCY", "TOKEN"}, rows, 64);
}

std::optional<json> replicas_of(const json& replicas, std::string_view vm) {
    json out = json::array();
    for (const auto& r : replica_list(replicas))
        if (text_field(r, "vm") == vm) out.push_back(r);
    if (out.empty()) return std::nullopt;
    return json{{"replicas", out}};
}

}  // namespace vmshadow::cli
