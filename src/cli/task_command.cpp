// SPDX-License-Identifier: MIT
// `vmshadow task list|show|log|abort`: the daemon's tasks (every run of a job, restore or
// verify) through its API.
#include <iostream>

#include "cli/daemon_client.h"
#include "cli/daemon_views.h"
#include "cli/numeric_option.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

// The daemon's largest page of tasks (daemon/api_routes.cpp).
constexpr unsigned kMaxTaskPage = 1000;

struct ListOptions {
    std::string state, job, kind;
    unsigned limit = 20;
};

struct LogOptions {
    long long id = 0;
    long long start = 1;
    bool follow = false;
};

Status run_list(const GlobalOptions& global, const ListOptions& o) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto tasks = daemon_call(*c, "GET",
                             with_query("/tasks", {{"state", o.state},
                                                   {"job", o.job},
                                                   {"kind", o.kind},
                                                   {"limit", std::to_string(o.limit)}}));
    if (!tasks) return std::unexpected(tasks.error());
    if (global.json)
        std::cout << tasks->dump() << std::endl;
    else
        std::cout << task_table(*tasks) << std::flush;
    return {};
}

Status run_show(const GlobalOptions& global, long long id) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto task = daemon_call(*c, "GET", "/tasks/" + std::to_string(id));
    if (!task) return std::unexpected(task.error());
    if (global.json)
        std::cout << task->dump() << std::endl;
    else
        std::cout << task_details(*task) << std::flush;
    return {};
}

Status run_log(const GlobalOptions& global, const LogOptions& o) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    // JSON lines with --json: one object per log line, as the API gives it.
    return follow_task_log(
        *c, o.id, o.start, o.follow, global.task->cancel(), [&](const json& line) {
            std::cout << (global.json ? line.dump() : log_line_text(line)) << std::endl;
        });
}

Status run_abort(const GlobalOptions& global, long long id) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto done = daemon_call(*c, "DELETE", "/tasks/" + std::to_string(id));
    if (!done) return std::unexpected(done.error());
    if (global.json)
        std::cout << done->dump() << std::endl;
    else
        std::cout << "task " << id << ": "
                  << (text_field(*done, "state").empty() ? "abort requested"
                                                         : text_field(*done, "state"))
                  << std::endl;
    return {};
}

CLI::Option* add_task_id(CLI::App& cmd, long long& id) {
    return add_whole_number_option(cmd, "id", id, 1, kMaxTaskId, "the task's id")->required();
}

}  // namespace

void add_task_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* task =
        app.add_subcommand("task", "vmshadowd's tasks: runs of jobs, restores, verifies");
    task->require_subcommand(1);

    auto list = std::make_shared<ListOptions>();
    CLI::App* ls = task->add_subcommand("list", "the newest tasks first");
    ls->add_option("--state", list->state, "only tasks in this state")
        ->check(CLI::IsMember({"queued", "running", "ok", "failed", "cancelled", "interrupted"}));
    add_daemon_name_option(*ls, "--job", list->job, "only the runs of this job");
    ls->add_option("--kind", list->kind, "only tasks of this kind")
        ->check(
            CLI::IsMember({"backup", "verify", "prune", "check", "restore", "gc", "replica-initial",
                           "replica-cycle", "replica-resync", "replica-test-failover",
                           "replica-failover", "replica-planned-failover", "replica-reverse",
                           "replica-export-initial", "replica-import-initial"}));
    add_whole_number_option(*ls, "--limit", list->limit, 1, kMaxTaskPage,
                            "at most N tasks (default 20)");
    ls->callback(
        [&global, &action, list] { action = [&global, list] { return run_list(global, *list); }; });

    auto show_id = std::make_shared<long long>(0);
    CLI::App* show = task->add_subcommand("show", "a task's state, times, progress, error, result");
    add_task_id(*show, *show_id);
    show->callback([&global, &action, show_id] {
        action = [&global, show_id] { return run_show(global, *show_id); };
    });

    auto log = std::make_shared<LogOptions>();
    CLI::App* lg = task->add_subcommand("log", "a task's log, as TIME LEVEL TEXT lines");
    add_task_id(*lg, log->id);
    add_whole_number_option(*lg, "--start", log->start, 1, kMaxTaskId, "from line N (default 1)");
    lg->add_flag("-f,--follow", log->follow,
                 "follow until the task ends (Ctrl-C stops following, not the task)");
    lg->callback(
        [&global, &action, log] { action = [&global, log] { return run_log(global, *log); }; });

    auto abort_id = std::make_shared<long long>(0);
    CLI::App* abort = task->add_subcommand("abort", "cancel a queued or running task (operator)");
    add_task_id(*abort, *abort_id);
    abort->callback([&global, &action, abort_id] {
        action = [&global, abort_id] { return run_abort(global, *abort_id); };
    });
}

}  // namespace vmshadow::cli
