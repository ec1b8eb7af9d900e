// SPDX-License-Identifier: MIT
#include "daemon/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>

#include "common/time_format.h"

namespace vmshadow::daemon {
namespace {

// A label value as the exposition format wants it: backslash, quote and newline escaped.
// Bytes that are not UTF-8 become U+FFFD (Prometheus rejects a scrape holding invalid
// UTF-8, and a VM name is whatever libvirt was given).
std::string escape_label(std::string_view value) {
    std::string out;
    out.reserve(value.size() + 2);
    std::size_t i = 0;
    while (i < value.size()) {
        auto c = static_cast<unsigned char>(value[i]);
        if (c < 0x80) {
            if (c == '\\') {
                out += "\\\\";
            } else if (c == '"') {
                out += "\\\"";
            } else if (c == '\n') {
                out += "\\n";
            } else {
                out += static_cast<char>(c);
            }
            ++i;
            continue;
        }
        // Length of the sequence from its lead byte; then its continuation bytes, the
        // shortest-form and surrogate rules.
        std::size_t len = c >= 0xF0 && c <= 0xF4  ? 4
                          : c >= 0xE0             ? 3
                          : c >= 0xC2 && c < 0xE0 ? 2
                                                  : 0;
        bool ok = len != 0 && i + len <= value.size();
        for (std::size_t k = 1; ok && k < len; ++k)
            ok = (static_cast<unsigned char>(value[i + k]) & 0xC0) == 0x80;
        if (ok && len >= 3) {
            auto c1 = static_cast<unsigned char>(value[i + 1]);
            if (c == 0xE0 && c1 < 0xA0) ok = false;   // overlong
            if (c == 0xED && c1 >= 0xA0) ok = false;  // surrogate
            if (c == 0xF0 && c1 < 0x90) ok = false;   // overlong
            if (c == 0xF4 && c1 >= 0x90) ok = false;  // past U+10FFFF
        }
        if (!ok) {
            out += "\xEF\xBF\xBD";
            ++i;
            continue;
        }
        out.append(value.substr(i, len));
        i += len;
    }
    return out;
}

// A sample value: Go's float syntax (what Prometheus parses), NaN and ±Inf spelled its way.
std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    // Whole numbers (time stamps, byte counts) as integers, not "1.8e+09"; the rest as the
    // shortest text that reads back as the same double ("0.125", "1e-07").
    if (std::trunc(v) == v && std::fabs(v) < 9007199254740992.0)
        return std::to_string(static_cast<std::int64_t>(v));
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return ec == std::errc() ? std::string(buf, end) : "NaN";
}
std::string format_value(std::uint64_t v) {
    return std::to_string(v);
}

class Exposition {
  public:
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_.append("# HELP ").append(name).append(" ").append(help).append("\n");
        out_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
    }
    template <typename V>
    void sample(std::string_view name, std::string_view labels, V value) {
        out_ += name;
        if (!labels.empty()) out_.append("{").append(labels).append("}");
        out_ += ' ';
        out_ += format_value(value);
        out_ += '\n';
    }
    std::string take() { return std::move(out_); }

  private:
    std::string out_;
};

std::string label(std::string_view name, std::string_view value) {
    return std::string(name) + "=\"" + escape_label(value) + "\"";
}

// One entry per name, sorted: a duplicate would be a duplicate series, which a scraper
// rejects; the first given wins.
template <typename T, typename Key>
std::vector<const T*> unique_sorted(const std::vector<T>& items, Key key) {
    std::vector<const T*> out;
    for (const auto& item : items) out.push_back(&item);
    std::stable_sort(out.begin(), out.end(),
                     [&](const T* a, const T* b) { return key(*a) < key(*b); });
    auto last = std::unique(out.begin(), out.end(),
                            [&](const T* a, const T* b) { return key(*a) == key(*b); });
    out.erase(last, out.end());
    return out;
}

void render_vms(Exposition& e, const std::vector<VmMetrics>& all) {
    auto vms = unique_sorted(all, [](const VmMetrics& m) -> const std::string& { return m.vm; });
    e.family("vmshadow_vm_last_success_timestamp_seconds", "gauge",
             "Unix time the VM's last backup succeeded.");
    for (const auto* m : vms)
        if (m->last_success)
            e.sample("vmshadow_vm_last_success_timestamp_seconds", label("vm", m->vm),
                     *m->last_success);
    e.family("vmshadow_vm_last_backup_duration_seconds", "gauge",
             "Duration of the VM's last successful backup.");
    for (const auto* m : vms)
        if (m->last_duration_s)
            e.sample("vmshadow_vm_last_backup_duration_seconds", label("vm", m->vm),
                     *m->last_duration_s);
    e.family("vmshadow_vm_last_backup_added_bytes", "gauge",
             "Bytes the VM's last successful backup added to its repository.");
    for (const auto* m : vms)
        if (m->last_added_bytes)
            e.sample("vmshadow_vm_last_backup_added_bytes", label("vm", m->vm),
                     *m->last_added_bytes);
    e.family("vmshadow_vm_last_freeze_window_seconds", "gauge",
             "How long the guest's file systems were frozen in the VM's last backup.");
    for (const auto* m : vms)
        if (m->last_freeze_s)
            e.sample("vmshadow_vm_last_freeze_window_seconds", label("vm", m->vm),
                     *m->last_freeze_s);
    e.family("vmshadow_vm_backup_failures_total", "counter", "Failed backups of the VM.");
    for (const auto* m : vms)
        e.sample("vmshadow_vm_backup_failures_total", label("vm", m->vm), m->failures_total);
}

void render_repositories(Exposition& e, const std::vector<RepositoryMetrics>& all) {
    auto repos =
        unique_sorted(all, [](const RepositoryMetrics& r) -> const std::string& { return r.name; });
    e.family("vmshadow_repository_size_bytes", "gauge",
             "Bytes the repository stores, after deduplication and compression.");
    for (const auto* r : repos)
        e.sample("vmshadow_repository_size_bytes", label("repository", r->name), r->stored_bytes);
    e.family("vmshadow_repository_logical_bytes", "gauge",
             "Bytes the repository's restore points hold before deduplication.");
    for (const auto* r : repos)
        e.sample("vmshadow_repository_logical_bytes", label("repository", r->name),
                 r->logical_bytes);
    e.family("vmshadow_repository_dedup_ratio", "gauge",
             "Logical bytes per stored byte (absent while the repository stores nothing).");
    for (const auto* r : repos)
        if (r->stored_bytes != 0)
            e.sample("vmshadow_repository_dedup_ratio", label("repository", r->name),
                     static_cast<double>(r->logical_bytes) / static_cast<double>(r->stored_bytes));
}

void render_tasks(Exposition& e, const MetricsSnapshot& s) {
    e.family("vmshadow_tasks", "gauge", "Tasks now queued or running.");
    e.sample("vmshadow_tasks", label("state", "queued"), s.tasks_queued);
    e.sample("vmshadow_tasks", label("state", "running"), s.tasks_running);
    e.family("vmshadow_tasks_finished_total", "counter",
             "Tasks that ended since the daemon started, by kind and final state.");
    for (const auto& [key, count] : s.tasks_finished)
        e.sample("vmshadow_tasks_finished_total",
                 label("kind", key.first) + "," + label("state", key.second), count);
    e.family("vmshadow_queue_length", "gauge", "Tasks waiting for a VM, a repository or a slot.");
    e.sample("vmshadow_queue_length", "", s.tasks_queued);
}

struct ReplicaSeries {
    std::string vm, role, state;
    const nlohmann::json* entry;
};

std::optional<double> number_at(const nlohmann::json& entry, const char* key) {
    auto it = entry.find(key);
    if (it == entry.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
}

std::string string_at(const nlohmann::json& entry, const char* key) {
    auto it = entry.find(key);
    return it != entry.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// An ISO 8601 UTC time or unix seconds.
std::optional<double> time_at(const nlohmann::json& entry, const char* key) {
    if (auto n = number_at(entry, key)) return n;
    auto text = string_at(entry, key);
    if (auto t = parse_iso8601_utc(text)) return static_cast<double>(*t);
    return std::nullopt;
}

std::vector<ReplicaSeries> replica_series(const nlohmann::json& replicas) {
    const nlohmann::json* list = &replicas;
    if (replicas.is_object()) {
        auto it = replicas.find("replicas");
        if (it == replicas.end()) return {};
        list = &*it;
    }
    std::vector<ReplicaSeries> out;
    if (!list->is_array()) return out;
    for (const auto& entry : *list) {
        if (!entry.is_object()) continue;
        auto vm = string_at(entry, "vm");
        if (vm.empty()) continue;
        out.push_back({vm, string_at(entry, "role"), string_at(entry, "state"), &entry});
    }
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.vm, a.role) < std::tie(b.vm, b.role);
    });
    return out;
}

}  // namespace

std::string render_replica_metrics(const nlohmann::json& replicas) {
    auto all = replica_series(replicas);
    auto per_vm =
        unique_sorted(all, [](const ReplicaSeries& r) -> const std::string& { return r.vm; });
    Exposition e;
    e.family("vmshadow_replica_state", "gauge",
             "The VM's replication state (normal, warning, critical, paused, resync-required, "
             "failed-over, test-failover, initial); the value is always 1.");
    std::set<std::pair<std::string, std::string>> seen;
    for (const auto& r : all)
        if (seen.insert({r.vm, r.role}).second)
            e.sample(
                "vmshadow_replica_state",
                label("vm", r.vm) + "," + label("role", r.role) + "," + label("state", r.state),
                std::uint64_t{1});
    struct Gauge {
        const char* name;
        const char* help;
        std::optional<double> (*value)(const nlohmann::json&);
    };
    const Gauge gauges[] = {
        {"vmshadow_replica_rpo_seconds",
         "Seconds since the instant the newest replicated recovery point equals.",
         [](const nlohmann::json& j) { return number_at(j, "rpo_s"); }},
        {"vmshadow_replica_last_cycle_timestamp_seconds",
         "Unix time of the VM's last replication cycle.",
         [](const nlohmann::json& j) { return time_at(j, "last_cycle"); }},
        {"vmshadow_replica_cycle_seconds_avg",
         "Average duration of the VM's replication cycles (the last 24 hours).",
         [](const nlohmann::json& j) { return number_at(j, "avg_cycle_s"); }},
        {"vmshadow_replica_cycle_seconds_max",
         "Longest of the VM's replication cycles (the last 24 hours).",
         [](const nlohmann::json& j) { return number_at(j, "max_cycle_s"); }},
    };
    for (const auto& g : gauges) {
        e.family(g.name, "gauge", g.help);
        for (const auto* r : per_vm)
            if (auto v = g.value(*r->entry)) e.sample(g.name, label("vm", r->vm), *v);
    }
    const Gauge counters[] = {
        {"vmshadow_replica_sent_bytes_total", "Bytes the VM's replication cycles sent.",
         [](const nlohmann::json& j) { return number_at(j, "bytes_sent"); }},
        {"vmshadow_replica_missed_cycles_total",
         "Replication cycles of the VM that could not start within their interval.",
         [](const nlohmann::json& j) { return number_at(j, "missed_cycles"); }},
    };
    for (const auto& c : counters) {
        e.family(c.name, "counter", c.help);
        for (const auto* r : per_vm)
            if (auto v = c.value(*r->entry); v && *v >= 0) e.sample(c.name, label("vm", r->vm), *v);
    }
    return e.take();
}

std::string render_metrics(const MetricsSnapshot& snapshot) {
    Exposition e;
    e.family("vmshadow_info", "gauge", "The daemon's version (the value is always 1).");
    e.sample("vmshadow_info", label("version", snapshot.version), std::uint64_t{1});
    e.family("vmshadow_daemon_start_time_seconds", "gauge", "Unix time the daemon started.");
    e.sample("vmshadow_daemon_start_time_seconds", "", snapshot.start_time);
    render_vms(e, snapshot.vms);
    render_repositories(e, snapshot.repositories);
    render_tasks(e, snapshot);
    return e.take();
}

}  // namespace vmshadow::daemon
