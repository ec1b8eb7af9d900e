// SPDX-License-Identifier: MIT
// `vmshadow job list|add|edit|run|remove`: vmshadowd's jobs through its API. Edits read the
// config's digest (GET /jobs) and send it back, so an edit made meanwhile by someone else is
// refused (conflict, exit 6) rather than overwritten.
#include <iostream>

#include "cli/daemon_client.h"
#include "cli/daemon_views.h"
#include "cli/numeric_option.h"
#include "repo/gc.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

// The daemon's ranges (daemon/job_config.cpp), checked here first so a typo is exit 2.
constexpr unsigned kMaxKeep = repo::kMaxKeep;  // vmshadow prune's bound
constexpr unsigned kMaxAlertHours = 87'600;    // ten years

// The flags of `job add` and `job edit` as CLI11 fills them; options() keeps those given.
struct JobFlags {
    std::string id;
    std::string kind, schedule, repository, method, catch_up, after, notify;
    std::vector<std::string> vms;
    std::optional<bool> group, boot, gc, enabled;
    unsigned keep[6] = {};
    unsigned alert_after_hours = 0, read_data_percent = 0;
    std::map<std::string, CLI::Option*> given;

    std::optional<std::string> text(const std::string& flag, const std::string& value) const {
        return given.at(flag)->count() ? std::optional(value) : std::nullopt;
    }
    std::optional<unsigned> number(const std::string& flag, unsigned value) const {
        return given.at(flag)->count() ? std::optional(value) : std::nullopt;
    }
    JobOptions options() const {
        JobOptions o;
        o.kind = text("--kind", kind);
        o.schedule = text("--schedule", schedule);
        o.repository = text("--repository", repository);
        o.method = text("--method", method);
        o.catch_up = text("--catch-up", catch_up);
        o.after = text("--after", after);
        o.notify = text("--notify", notify);
        o.vms = vms;
        o.group = group;
        o.boot = boot;
        o.gc = gc;
        o.enabled = enabled;
        o.keep_last = number("--keep-last", keep[0]);
        o.keep_hourly = number("--keep-hourly", keep[1]);
        o.keep_daily = number("--keep-daily", keep[2]);
        o.keep_weekly = number("--keep-weekly", keep[3]);
        o.keep_monthly = number("--keep-monthly", keep[4]);
        o.keep_yearly = number("--keep-yearly", keep[5]);
        o.alert_after_hours = number("--alert-after-hours", alert_after_hours);
        o.read_data_percent = number("--read-data-percent", read_data_percent);
        return o;
    }
};

void add_switch(CLI::App& cmd, const std::string& on, const std::string& off,
                std::optional<bool>& value, const std::string& help_on,
                const std::string& help_off) {
    CLI::Option* yes = cmd.add_flag_callback(
        on, [&value] { value = true; }, help_on);
    CLI::Option* no = cmd.add_flag_callback(
        off, [&value] { value = false; }, help_off);
    yes->excludes(no);
}

// The options `job add` and `job edit` share (an edit changes only those given).
void add_job_flags(CLI::App& cmd, JobFlags& f, bool adding) {
    auto& g = f.given;
    g["--kind"] = cmd.add_option("--kind", f.kind, "backup, verify, prune or check")
                      ->check(CLI::IsMember({"backup", "verify", "prune", "check"}));
    g["--repository"] = add_daemon_name_option(cmd, "--repository", f.repository,
                                               "a repository of vmshadowd's config");
    g["--schedule"] = cmd.add_option("--schedule", f.schedule,
                                     "systemd calendar event: daily, hourly, 'Mon..Fri 22:00', "
                                     "'*:0/15' ('' = only when run by hand)");
    cmd.add_option("--vm", f.vms, "VM name or glob ('*': every VM); repeat for more")
        ->type_name("PATTERN");
    g["--method"] = cmd.add_option("--method", f.method, "backup: auto, application, image, crash")
                        ->check(CLI::IsMember({"auto", "application", "image", "crash"}));
    add_switch(cmd, "--group", "--no-group", f.group,
               "backup: one snapshot set for all the job's VMs", "backup: one VM at a time");
    const char* keep_names[] = {"--keep-last",   "--keep-hourly",  "--keep-daily",
                                "--keep-weekly", "--keep-monthly", "--keep-yearly"};
    const char* keep_help[] = {"keep the N newest points",    "keep the newest of N hours",
                               "keep the newest of N days",   "keep the newest of N weeks",
                               "keep the newest of N months", "keep the newest of N years"};
    for (int i = 0; i < 6; ++i)
        g[keep_names[i]] = add_whole_number_option(cmd, keep_names[i], f.keep[i], 1, kMaxKeep,
                                                   std::string("backup, prune: ") + keep_help[i]);
    g["--catch-up"] = cmd.add_option("--catch-up", f.catch_up,
                                     "after downtime: one run (default), all missed, none")
                          ->check(CLI::IsMember({"one", "all", "none"}));
    auto after_check = [](std::string& text) {
        return text.empty() ? std::string() : daemon_name_problem(text);
    };
    g["--after"] = cmd.add_option("--after", f.after,
                                  "run when this job's run succeeds" +
                                      std::string(adding ? "" : " ('' = no longer)"))
                       ->type_name("JOB")
                       ->check(CLI::Validator(after_check, "", "vmshadow-daemon-name"));
    g["--notify"] = cmd.add_option("--notify", f.notify, "alert on always, failure, never")
                        ->check(CLI::IsMember({"always", "failure", "never"}));
    g["--alert-after-hours"] = add_whole_number_option(
        cmd, "--alert-after-hours", f.alert_after_hours, 0, kMaxAlertHours,
        "backup: alert when a VM has no successful backup for H hours (0 = off)");
    g["--read-data-percent"] =
        add_whole_number_option(cmd, "--read-data-percent", f.read_data_percent, 0, 100,
                                "check: read back P % of the packs per run");
    add_switch(cmd, "--boot", "--no-boot", f.boot, "verify: boot each VM's latest point",
               "verify: check the data only");
    add_switch(cmd, "--gc", "--no-gc", f.gc, "prune: gc after pruning (default)", "prune: no gc");
    add_switch(cmd, "--enabled", "--disabled", f.enabled, "the job runs on its schedule",
               "the job runs only when asked");
}

// GET /jobs: the list and the config's digest an edit must carry.
Result<json> read_jobs(const DaemonConnection& c) {
    auto jobs = daemon_call(c, "GET", "/jobs");
    if (!jobs) return jobs;
    if (text_field(*jobs, "digest").empty())
        return fail(ErrorKind::io, "vmshadowd's GET /api/v1/jobs answer has no digest");
    return jobs;
}

void print_result(const GlobalOptions& global, const json& answer, const std::string& line) {
    if (global.json)
        std::cout << answer.dump() << std::endl;
    else
        std::cout << line << std::endl;
}

Status run_list(const GlobalOptions& global) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto jobs = daemon_call(*c, "GET", "/jobs");
    if (!jobs) return std::unexpected(jobs.error());
    print_result(global, *jobs, job_table(*jobs));
    return {};
}

Status run_add(const GlobalOptions& global, const JobFlags& f) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto jobs = read_jobs(*c);
    if (!jobs) return std::unexpected(jobs.error());
    auto done = daemon_call(*c, "POST", "/jobs",
                            new_job_body(f.id, f.options(), text_field(*jobs, "digest")));
    if (!done) return std::unexpected(done.error());
    print_result(global, *done, "added job " + f.id);
    return {};
}

Status run_edit(const GlobalOptions& global, const JobFlags& f) {
    if (job_changes(f.options()).empty())
        return fail(ErrorKind::invalid_argument,
                    "job edit " + f.id +
                        ": nothing to change (give the options to change, see `vmshadow job "
                        "edit --help`)");
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto jobs = read_jobs(*c);
    if (!jobs) return std::unexpected(jobs.error());
    auto job = edited_job_body(*jobs, f.id, f.options());
    if (!job) return std::unexpected(job.error());
    json body{{"digest", text_field(*jobs, "digest")}, {"job", *job}};
    auto done = daemon_call(*c, "PUT", "/jobs/" + f.id, body);
    if (!done) return std::unexpected(done.error());
    print_result(global, *done, "changed job " + f.id);
    return {};
}

Status run_remove(const GlobalOptions& global, const std::string& id) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto jobs = read_jobs(*c);
    if (!jobs) return std::unexpected(jobs.error());
    auto done = daemon_call(*c, "DELETE",
                            with_query("/jobs/" + id, {{"digest", text_field(*jobs, "digest")}}));
    if (!done) return std::unexpected(done.error());
    print_result(global, *done, "removed job " + id);
    return {};
}

Status run_run(const GlobalOptions& global, const std::string& id, bool wait) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto started = daemon_call(*c, "POST", "/jobs/" + id + "/run", json::object());
    if (!started) return std::unexpected(started.error());
    return report_started_task(global, *c, *started, "run job " + id, wait);
}

}  // namespace

void add_job_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* job = app.add_subcommand("job", "vmshadowd's scheduled jobs");
    job->require_subcommand(1);

    job->add_subcommand("list", "every job, its schedule, next run and last success")
        ->callback([&global, &action] { action = [&global] { return run_list(global); }; });

    auto add_flags = std::make_shared<JobFlags>();
    CLI::App* add = job->add_subcommand("add", "define a job (admin)");
    add_daemon_name_option(*add, "id", add_flags->id, "the job's id")->required();
    add_job_flags(*add, *add_flags, true);
    add_flags->given["--kind"]->required();
    add_flags->given["--repository"]->required();
    add->callback([&global, &action, add_flags] {
        action = [&global, add_flags] { return run_add(global, *add_flags); };
    });

    auto edit_flags = std::make_shared<JobFlags>();
    CLI::App* edit = job->add_subcommand("edit", "change the options given of a job (admin)");
    add_daemon_name_option(*edit, "id", edit_flags->id, "the job's id")->required();
    add_job_flags(*edit, *edit_flags, false);
    edit->callback([&global, &action, edit_flags] {
        action = [&global, edit_flags] { return run_edit(global, *edit_flags); };
    });

    auto run_id = std::make_shared<std::string>();
    auto wait = std::make_shared<bool>(false);
    CLI::App* run = job->add_subcommand("run", "run a job now; prints the task id (operator)");
    add_daemon_name_option(*run, "id", *run_id, "the job's id")->required();
    run->add_flag("--wait", *wait,
                  "follow the task's log until it ends; exit with its result's exit code");
    run->callback([&global, &action, run_id, wait] {
        action = [&global, run_id, wait] { return run_run(global, *run_id, *wait); };
    });

    auto remove_id = std::make_shared<std::string>();
    CLI::App* remove = job->add_subcommand("remove", "delete a job (admin)");
    add_daemon_name_option(*remove, "id", *remove_id, "the job's id")->required();
    remove->callback([&global, &action, remove_id] {
        action = [&global, remove_id] { return run_remove(global, *remove_id); };
    });
}

}  // namespace vmshadow::cli
