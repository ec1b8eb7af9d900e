// SPDX-License-Identifier: MIT
#pragma once
// What the daemon's client commands print (`status`, `job list`, `task list|show|log`,
// `token list`) from the API's JSON, and the job JSON `job add|edit` send: pure functions of
// JSON so tests call them on fixtures, without a daemon or a terminal.
//
// The answers come from another process: a field that is missing or of another type prints
// as "-" (never an exception), and every string goes through printable()/table_cell() so a
// name holding a newline or an escape sequence cannot break the table or the terminal.
//
// The job JSON field names (snake_case, daemon/job_config.h's job_to_json) are written in
// exactly one place: job_changes().
//
// Thread-safety: pure functions.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow::cli {

// Safe reads of another process's JSON: "" / nullopt when absent or of another type.
std::string text_field(const nlohmann::json& j, std::string_view key);
std::optional<std::int64_t> int_field(const nlohmann::json& j, std::string_view key);

// The two largest units: 42 → "42 s", 750 → "12 min 30 s", 11520 → "3 h 12 min", 190800 →
// "2 d 5 h"; negative → "0 s".
std::string format_age(std::int64_t seconds);
// "2026-12-07T05:30:00Z" (or unix seconds) → "2026-12-07 05:30"; "-" for null/absent.
std::string format_time(const nlohmann::json& value);

// Columns padded to their widest cell (capped at `max_width`, cut with "~"), two spaces apart.
std::string render_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows,
                         std::size_t max_width = 40);

// GET /vms → NAME STATE METHOD LAST-BACKUP AGE CONSISTENCY NEXT-RUN PROTECTION.
std::string status_table(const nlohmann::json& vms);
// GET /jobs → ID KIND SCHEDULE VMS REPOSITORY NEXT-RUN LAST-SUCCESS.
std::string job_table(const nlohmann::json& jobs);
// GET /tasks → ID STATE KIND JOB TARGET TRIGGER STARTED DURATION.
std::string task_table(const nlohmann::json& tasks);
// GET /tasks/{id} → "state: failed" ... lines: state, times, progress, error, result summary.
std::string task_details(const nlohmann::json& task);
// One line of GET /tasks/{id}/log → "TIME LEVEL TEXT".
std::string log_line_text(const nlohmann::json& line);
// GET /tokens → NAME ROLE CREATED.
std::string token_table(const nlohmann::json& tokens);

// The options of `job add` and `job edit`: what the user gave (nullopt: not given).
struct JobOptions {
    std::optional<std::string> kind, schedule, repository, method, catch_up, after, notify;
    std::vector<std::string> vms;  // empty: not given
    std::optional<bool> group, boot, gc, enabled;
    std::optional<unsigned> keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
        keep_yearly;
    std::optional<unsigned> alert_after_hours, read_data_percent;
};

// The job fields the options set, as the API names them ({"kind": ..., "keep_daily": 7}).
// An empty --after ("") is null: the field is removed.
nlohmann::json job_changes(const JobOptions& options);
// The body of POST /jobs: {"digest", "job": {"id", ...changes}}.
nlohmann::json new_job_body(const std::string& id, const JobOptions& options,
                            const std::string& digest);
// The job `id` of a GET /jobs answer changed by the options, as PUT /jobs/{id} takes it:
// the fields GET adds (next_run, last_task, last_success) left out; on a change of kind,
// the fields of the old kind dropped (the daemon refuses a field the kind does not take).
// not_found when the answer has no such job.
Result<nlohmann::json> edited_job_body(const nlohmann::json& jobs_answer, const std::string& id,
                                       const JobOptions& options);

}  // namespace vmshadow::cli
