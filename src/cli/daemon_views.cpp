// SPDX-License-Identifier: MIT
#include "cli/daemon_views.h"

#include <algorithm>
#include <cstdio>

#include "cli/names.h"
#include "common/time_format.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

const json* find(const json& j, std::string_view key) {
    if (!j.is_object()) return nullptr;
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string or_dash(std::string s) {
    return s.empty() ? "-" : s;
}

// The array a list answer holds: the answer itself, or its `key` member.
const json& list_in(const json& answer, std::string_view key) {
    static const json kEmpty = json::array();
    if (answer.is_array()) return answer;
    const json* list = find(answer, key);
    return list && list->is_array() ? *list : kEmpty;
}

std::string percent(std::uint64_t done, std::uint64_t total) {
    if (total == 0) return "";
    char buf[16];
    std::snprintf(buf, sizeof buf, " (%.0f %%)", 100.0 * static_cast<double>(done) / total);
    return buf;
}

std::uint64_t unsigned_field(const json& j, std::string_view key) {
    auto v = int_field(j, key);
    return v && *v > 0 ? static_cast<std::uint64_t>(*v) : 0;
}

// The top-level scalars of a task's result ("points=2, bytes_added=1048576"), arrays by size.
std::string result_summary(const json& result) {
    if (!result.is_object()) return result.is_null() ? "" : printable(result.dump());
    std::string out;
    for (const auto& [key, value] : result.items()) {
        std::string v = value.is_string()   ? value.get<std::string>()
                        : value.is_array()  ? std::to_string(value.size()) + " item(s)"
                        : value.is_object() ? "{...}"
                                            : value.dump();
        out += (out.empty() ? "" : ", ") + key + "=" + v;
    }
    return printable(out.size() > 400 ? out.substr(0, 400) + "..." : out);
}

}  // namespace

std::string text_field(const json& j, std::string_view key) {
    const json* v = find(j, key);
    if (!v) return "";
    if (v->is_string()) return v->get<std::string>();
    if (v->is_number() || v->is_boolean()) return v->dump();
    return "";
}

std::optional<std::int64_t> int_field(const json& j, std::string_view key) {
    const json* v = find(j, key);
    if (!v || !v->is_number_integer()) return std::nullopt;
    if (v->is_number_unsigned() && v->get<std::uint64_t>() > INT64_MAX) return std::nullopt;
    return v->get<std::int64_t>();
}

std::string format_age(std::int64_t s) {
    if (s < 0) s = 0;
    if (s < 60) return std::to_string(s) + " s";
    const std::int64_t m = s / 60;
    if (m < 60) return std::to_string(m) + " min " + std::to_string(s % 60) + " s";
    const std::int64_t h = m / 60;
    if (h < 24) return std::to_string(h) + " h " + std::to_string(m % 60) + " min";
    return std::to_string(h / 24) + " d " + std::to_string(h % 24) + " h";
}

std::string format_time(const json& value) {
    std::optional<std::int64_t> t;
    if (value.is_number_integer()) t = value.get<std::int64_t>();
    if (value.is_string()) {
        t = parse_iso8601_utc(value.get<std::string>());
        if (!t) return or_dash(printable(value.get<std::string>()));
    }
    if (!t || *t <= 0) return "-";
    return format_utc(*t, "%Y-%m-%d %H:%M");
}

std::string render_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows, std::size_t max_width) {
    std::vector<std::size_t> width(headers.size());
    for (std::size_t c = 0; c < headers.size(); ++c) width[c] = headers[c].size();
    for (const auto& row : rows)
        for (std::size_t c = 0; c < headers.size() && c < row.size(); ++c)
            width[c] = std::max(width[c], std::min(printable(row[c]).size(), max_width));
    auto line = [&](const std::vector<std::string>& cells) {
        std::string out;
        for (std::size_t c = 0; c < headers.size(); ++c) {
            const std::string cell = c < cells.size() ? cells[c] : "";
            // The last column is not padded: no trailing blanks.
            out += c + 1 == headers.size()
                       ? table_cell(cell, std::min(printable(cell).size(), width[c]))
                       : table_cell(cell, width[c]) + "  ";
        }
        return out + "\n";
    };
    std::string out = line(headers);
    for (const auto& row : rows) out += line(row);
    return out;
}

std::string status_table(const json& vms) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& vm : list_in(vms, "vms")) {
        auto age = int_field(vm, "age_s");
        const json* last = find(vm, "last_backup");
        const json* next = find(vm, "next_run");
        rows.push_back({or_dash(text_field(vm, "name")), or_dash(text_field(vm, "state")),
                        or_dash(text_field(vm, "method")), last ? format_time(*last) : "-",
                        age ? format_age(*age) : "-", or_dash(text_field(vm, "consistency")),
                        next ? format_time(*next) : "-", or_dash(text_field(vm, "protection"))});
    }
    return render_table(
        {"NAME", "STATE", "METHOD", "LAST-BACKUP", "AGE", "CONSISTENCY", "NEXT-RUN", "PROTECTION"},
        rows);
}

std::string job_table(const json& jobs) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& job : list_in(jobs, "jobs")) {
        std::string vms;
        if (const json* list = find(job, "vms"); list && list->is_array())
            for (const auto& v : *list)
                if (v.is_string()) vms += (vms.empty() ? "" : ",") + v.get<std::string>();
        std::string schedule = text_field(job, "schedule");
        if (schedule.empty()) schedule = "(on demand)";
        if (const json* e = find(job, "enabled"); e && e->is_boolean() && !e->get<bool>())
            schedule += " (disabled)";
        const json* next = find(job, "next_run");
        const json* success = find(job, "last_success");
        rows.push_back({or_dash(text_field(job, "id")), or_dash(text_field(job, "kind")), schedule,
                        or_dash(vms), or_dash(text_field(job, "repository")),
                        next ? format_time(*next) : "-", success ? format_time(*success) : "-"});
    }
    return render_table({"ID", "KIND", "SCHEDULE", "VMS", "REPOSITORY", "NEXT-RUN", "LAST-SUCCESS"},
                        rows);
}

std::string task_table(const json& tasks) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : list_in(tasks, "tasks")) {
        auto started = int_field(t, "started_at");
        auto ended = int_field(t, "ended_at");
        std::string duration = "-";
        if (started && ended && *ended >= *started) duration = format_age(*ended - *started);
        rows.push_back({or_dash(text_field(t, "id")), or_dash(text_field(t, "state")),
                        or_dash(text_field(t, "kind")), or_dash(text_field(t, "job")),
                        or_dash(text_field(t, "target")), or_dash(text_field(t, "trigger")),
                        started ? format_time(*started) : "-", duration});
    }
    return render_table({"ID", "STATE", "KIND", "JOB", "TARGET", "TRIGGER", "STARTED", "DURATION"},
                        rows);
}

std::string task_details(const json& t) {
    std::string out;
    auto add = [&](std::string_view key, const std::string& value) {
        if (!value.empty() && value != "-")
            out += std::string(key) + ":" + std::string(10 - key.size(), ' ') + printable(value) +
                   "\n";
    };
    add("task", text_field(t, "id"));
    add("state", text_field(t, "state"));
    add("kind", text_field(t, "kind"));
    add("job", text_field(t, "job"));
    add("target", text_field(t, "target"));
    add("trigger", text_field(t, "trigger"));
    for (auto [key, field] : {std::pair{"queued", "queued_at"}, std::pair{"started", "started_at"},
                              std::pair{"ended", "ended_at"}})
        if (const json* v = find(t, field)) add(key, format_time(*v));
    auto started = int_field(t, "started_at");
    auto ended = int_field(t, "ended_at");
    if (started && ended && *ended >= *started) add("duration", format_age(*ended - *started));
    if (const json* p = find(t, "progress")) {
        std::string progress = text_field(*p, "phase");
        if (auto item = text_field(*p, "item"); !item.empty()) progress += " " + item;
        const auto done = unsigned_field(*p, "bytes_done"),
                   total = unsigned_field(*p, "bytes_total");
        if (total)
            progress += " " + std::to_string(done) + "/" + std::to_string(total) + " bytes" +
                        percent(done, total);
        const auto idone = unsigned_field(*p, "items_done"),
                   itotal = unsigned_field(*p, "items_total");
        if (itotal)
            progress += " " + std::to_string(idone) + "/" + std::to_string(itotal) + " items";
        add("progress", progress);
    }
    if (auto error = text_field(t, "error"); !error.empty()) {
        auto kind = text_field(t, "error_kind");
        add("error", error + (kind.empty() ? "" : " (" + kind + ")"));
    }
    if (const json* r = find(t, "result")) add("result", result_summary(*r));
    add("log", text_field(t, "log_lines").empty() ? "" : text_field(t, "log_lines") + " line(s)");
    return out;
}

std::string log_line_text(const json& line) {
    std::string level = text_field(line, "level");
    const json* time = find(line, "time");
    std::string text = (time ? format_time(*time) : "-") + " " + table_cell(or_dash(level), 7) +
                       " " + printable(text_field(line, "text"));
    return text;
}

std::string token_table(const json& tokens) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : list_in(tokens, "tokens")) {
        const json* created = find(t, "created");
        rows.push_back({or_dash(text_field(t, "name")), or_dash(text_field(t, "role")),
                        created ? format_time(*created) : "-"});
    }
    return render_table({"NAME", "ROLE", "CREATED"}, rows);
}

json job_changes(const JobOptions& o) {
    json j = json::object();
    auto set = [&](const char* key, const auto& value) {
        if (value) j[key] = *value;
    };
    set("kind", o.kind);
    set("schedule", o.schedule);
    set("repository", o.repository);
    set("method", o.method);
    set("catch_up", o.catch_up);
    set("notify", o.notify);
    if (o.after) j["after"] = o.after->empty() ? json() : json(*o.after);
    if (!o.vms.empty()) j["vms"] = o.vms;
    set("group", o.group);
    set("boot", o.boot);
    set("gc", o.gc);
    set("enabled", o.enabled);
    set("keep_last", o.keep_last);
    set("keep_hourly", o.keep_hourly);
    set("keep_daily", o.keep_daily);
    set("keep_weekly", o.keep_weekly);
    set("keep_monthly", o.keep_monthly);
    set("keep_yearly", o.keep_yearly);
    set("alert_after_hours", o.alert_after_hours);
    set("read_data_percent", o.read_data_percent);
    return j;
}

json new_job_body(const std::string& id, const JobOptions& options, const std::string& digest) {
    json job{{"id", id}};
    job.merge_patch(job_changes(options));  // a null (--after "") is simply left out
    return json{{"digest", digest}, {"job", job}};
}

Result<json> edited_job_body(const json& answer, const std::string& id, const JobOptions& options) {
    const json* current = nullptr;
    for (const auto& job : list_in(answer, "jobs"))
        if (text_field(job, "id") == id) current = &job;
    if (!current)
        return fail(ErrorKind::not_found,
                    "job '" + printable(id) + "' does not exist (see `vmshadow job list`)");
    json job = *current;
    for (const char* view_only : {"next_run", "last_task", "last_success"}) job.erase(view_only);
    json changes = job_changes(options);
    if (changes.contains("kind") && changes["kind"] != job.value("kind", json())) {
        // What every kind takes; the rest belonged to the old kind.
        static const std::vector<std::string> kCommon = {
            "id", "kind", "schedule", "repository", "catch_up", "notify", "enabled", "after"};
        json kept = json::object();
        for (const auto& key : kCommon)
            if (job.contains(key)) kept[key] = job[key];
        const std::string kind = text_field(changes, "kind");
        if ((kind == "backup" || kind == "verify") && job.contains("vms")) kept["vms"] = job["vms"];
        job = std::move(kept);
    }
    job.merge_patch(changes);
    return job;
}

}  // namespace vmshadow::cli
