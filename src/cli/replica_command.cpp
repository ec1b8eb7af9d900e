// SPDX-License-Identifier: MIT
// `vmshadow replica ...`: Replica (docs/REPLICA.md) through the local vmshadowd's API —
// enable, status, points, and the actions on one VM's replication (POST
// /replicas/{vm}/{action}). Actions that run long (a cycle, a resync, a failover, ...) start a
// task on the daemon: the command prints its id, and with --wait follows it to its end as
// `job run --wait` does. Failover and commit throw state away: they run only with --yes
// (vmshadow never asks on the terminal; a script must say so too).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>

#include "cli/daemon_client.h"
#include "cli/daemon_views.h"
#include "cli/names.h"
#include "cli/numeric_option.h"
#include "cli/replica_views.h"
#include "common/time_format.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

// The daemon's ranges (daemon/api_routes.cpp), checked here first so a typo is exit 2.
constexpr unsigned kMaxHistory = 24;
constexpr unsigned kMaxAppConsistentHours = 24;
constexpr unsigned kMaxBandwidthMib = 100000;
constexpr std::size_t kMaxVmNameBytes = 256;
// import-initial names no VM: the API's {vm} is ignored there.
constexpr const char* kNoVm = "-";

std::string or_dash(std::string text) {
    return text.empty() ? "-" : printable(text);
}

// ---- parse-time checks -------------------------------------------------------------------

CLI::Validator vm_name_check() {
    return CLI::Validator(
        [](std::string& name) -> std::string {
            bool control = std::any_of(name.begin(), name.end(),
                                       [](char c) { return static_cast<unsigned char>(c) < 0x20; });
            if (!name.empty() && name.size() <= kMaxVmNameBytes && !control) return {};
            return "must be a VM name (1 to 256 bytes, no control characters), got '" +
                   printable(name.substr(0, 64)) + "'";
        },
        "VM", "vmshadow-vm-name");
}

CLI::Validator endpoint_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            auto colon = text.rfind(':');
            bool ok = colon != std::string::npos && colon > 0 && colon + 1 < text.size() &&
                      colon + 6 >= text.size();
            for (std::size_t i = 0; ok && i < text.size(); ++i) {
                auto u = static_cast<unsigned char>(text[i]);
                ok = i > colon ? (u >= '0' && u <= '9') : (u > 0x20 && u < 0x7F && u != '/');
            }
            if (ok) {
                long port = std::stol(text.substr(colon + 1));
                ok = port >= 1 && port <= 65535;
            }
            if (ok) return {};
            return "must be HOST:PORT, the replica host's [replica] endpoint (hostb:8471), got '" +
                   printable(text.substr(0, 64)) + "'";
        },
        "HOST:PORT", "vmshadow-endpoint");
}

CLI::Validator interval_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (parse_replica_interval(text)) return {};
            return "must be 30s, 5m or 15m (the frequencies Hyper-V Replica offers), got '" +
                   printable(text.substr(0, 64)) + "'";
        },
        "30s|5m|15m", "vmshadow-interval");
}

CLI::Validator start_at_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            auto digit = [](char c) { return c >= '0' && c <= '9'; };
            bool hhmm = text.size() == 5 && digit(text[0]) && digit(text[1]) && text[2] == ':' &&
                        digit(text[3]) && digit(text[4]) &&
                        (text[0] - '0') * 10 + (text[1] - '0') < 24 && text[3] < '6';
            if (hhmm || parse_iso8601_utc(text)) return {};
            return "must be a UTC time (2026-12-07T22:00:00Z) or a time of day (22:00), got '" +
                   printable(text.substr(0, 64)) + "'";
        },
        "TIME", "vmshadow-start-at");
}

CLI::Validator absolute_path_check() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (text.starts_with('/')) return {};
            return "must be an absolute path on the replica host, got '" +
                   printable(text.substr(0, 64)) + "'";
        },
        "PATH", "vmshadow-absolute-path");
}

CLI::Option* add_vm(CLI::App& cmd, std::string& vm) {
    return cmd.add_option("vm", vm, "the VM's name")->required()->check(vm_name_check());
}

// A folder on the daemon's host, made absolute against ours (the daemon is local).
std::string absolute_dir(const std::string& dir) {
    std::error_code ec;
    auto path = std::filesystem::absolute(dir, ec);
    return ec ? dir : path.lexically_normal().string();
}

// ---- enable ------------------------------------------------------------------------------

struct EnableFlags {
    std::string vm, to, interval, start_at, initial, seed_repository, seed_point;
    std::vector<std::string> exclude_disks;
    unsigned history = 0, app_consistent_every = 0, bandwidth = 0;
    std::map<std::string, CLI::Option*> given;

    bool has(const std::string& flag) const { return given.at(flag)->count() > 0; }
};

// The POST /replicas body: the options given, and initial = repository implied by a seed.
Result<json> enable_body(const EnableFlags& f) {
    json body{{"vm", f.vm}, {"to", f.to}, {"interval_s", *parse_replica_interval(f.interval)}};
    if (f.has("--history")) body["history"] = f.history;
    if (f.has("--app-consistent-every")) body["app_consistent_every_h"] = f.app_consistent_every;
    if (f.has("--bandwidth")) body["bandwidth_mib"] = f.bandwidth;
    if (!f.exclude_disks.empty()) body["exclude_disks"] = f.exclude_disks;
    if (f.has("--start-at")) body["start_at"] = f.start_at;
    bool seeded = f.has("--seed-repository") || f.has("--seed-point");
    std::string initial = f.has("--initial") ? f.initial : seeded ? "repository" : "network";
    if (initial == "repository" && !(f.has("--seed-repository") && f.has("--seed-point")))
        return fail(ErrorKind::invalid_argument,
                    "replica enable " + f.vm +
                        ": --initial repository needs --seed-repository PATH and --seed-point ID "
                        "(a restore point the replica host can read)");
    if (initial != "repository" && seeded)
        return fail(ErrorKind::invalid_argument, "replica enable " + f.vm +
                                                     ": --seed-repository and --seed-point go with "
                                                     "--initial repository, not " +
                                                     initial);
    body["initial"] = initial;
    if (seeded) {
        body["seed_repository"] = f.seed_repository;
        body["seed_point"] = f.seed_point;
    }
    return body;
}

void add_enable_flags(CLI::App& cmd, EnableFlags& f) {
    auto& g = f.given;
    add_vm(cmd, f.vm);
    cmd.add_option("--to", f.to, "the replica host's [replica] endpoint")
        ->required()
        ->check(endpoint_check());
    cmd.add_option("--interval", f.interval, "how often a cycle sends the changes: 30s, 5m, 15m")
        ->required()
        ->check(interval_check());
    g["--history"] = add_whole_number_option(
        cmd, "--history", f.history, 0, kMaxHistory,
        "earlier recovery points the replica keeps besides the latest (default 0)");
    g["--app-consistent-every"] = add_whole_number_option(
        cmd, "--app-consistent-every", f.app_consistent_every, 0, kMaxAppConsistentHours,
        "an application-consistent point every H hours (guest agent freeze; 0: never)");
    cmd.add_option("--exclude-disk", f.exclude_disks,
                   "a disk (target, e.g. vdb) not replicated; "
                   "repeat for more")
        ->type_name("DISK")
        ->check(vm_name_check().description("DISK"));
    g["--bandwidth"] = add_whole_number_option(cmd, "--bandwidth", f.bandwidth, 0, kMaxBandwidthMib,
                                               "cap on what a cycle sends, MiB/s (0: no cap)");
    g["--start-at"] = cmd.add_option("--start-at", f.start_at,
                                     "the initial copy not before this time (UTC, or HH:MM)")
                          ->check(start_at_check());
    g["--initial"] = cmd.add_option("--initial", f.initial,
                                    "how the initial copy travels: network (default), offline "
                                    "(export-initial/import-initial), repository (a seed)")
                         ->check(CLI::IsMember({"network", "offline", "repository"}));
    g["--seed-repository"] =
        cmd.add_option("--seed-repository", f.seed_repository,
                       "--initial repository: a repository the replica host reads")
            ->check(absolute_path_check());
    g["--seed-point"] = cmd.add_option("--seed-point", f.seed_point,
                                       "--initial repository: the restore point (id, VM@latest)");
}

Status run_enable(const GlobalOptions& global, const EnableFlags& f) {
    auto body = enable_body(f);
    if (!body) return std::unexpected(body.error());
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto entry = daemon_call(*c, "POST", "/replicas", *body);
    if (!entry) return std::unexpected(entry.error());
    if (global.json) {
        std::cout << entry->dump() << std::endl;
        return {};
    }
    std::cout << "replicating " << printable(f.vm) << " to " << printable(f.to) << " every "
              << f.interval << " (state " << or_dash(text_field(*entry, "state"))
              << "); the initial copy "
              << ((*body)["initial"] == "offline"
                      ? "waits for `vmshadow replica export-initial " + printable(f.vm) + " DIR`"
                      : std::string("starts on schedule"))
              << std::endl;
    return {};
}

// ---- status and points -------------------------------------------------------------------

Status run_status(const GlobalOptions& global, const std::string& vm) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto all = daemon_call(*c, "GET", "/replicas");
    if (!all) return std::unexpected(all.error());
    json shown = *all;
    if (!vm.empty()) {
        auto mine = replicas_of(*all, vm);
        if (!mine)
            return fail(ErrorKind::not_found, "no replication of '" + printable(vm) +
                                                  "' on this host (`vmshadow replica status` "
                                                  "lists them)");
        shown = *mine;
    }
    if (global.json)
        std::cout << shown.dump() << std::endl;
    else
        std::cout << replica_table(shown) << std::flush;
    return {};
}

Status run_points(const GlobalOptions& global, const std::string& vm) {
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    auto points = daemon_call(*c, "GET", "/replicas/" + percent_encode(vm) + "/points");
    if (!points) return std::unexpected(points.error());
    if (global.json)
        std::cout << points->dump() << std::endl;
    else
        std::cout << replica_points_table(*points) << std::flush;
    return {};
}

// ---- the actions ---------------------------------------------------------------------------

// One `replica ACTION` subcommand: its API action, what it takes, what it says when done.
struct ActionSpec {
    const char* name;
    const char* help;
    const char* done;           // "paused replication of": printed with the VM after a quick action
    bool long_running = false;  // starts a task: --wait
    bool point = false;         // --point SEQ
    bool on_replica = false;    // --on-replica
    bool dir = false;           // DIR positional
    bool vm = true;             // VM positional
    const char* confirm = nullptr;  // what is lost: needs --yes
};

const ActionSpec kActions[] = {
    {"pause", "stop sending cycles until resume (the replica keeps its points)",
     "paused replication of"},
    {"resume", "send cycles again after pause", "resumed replication of"},
    {"remove",
     "stop replicating the VM (the VM itself is not touched); --on-replica also deletes the "
     "replica host's copy",
     "removed replication of", false, false, true},
    {"cycle", "a replication cycle now (a task)", "", true},
    {"resync",
     "compare the replica's blocks with the VM's and send those that differ (a task); after a "
     "broken chain",
     "", true},
    {"test-failover",
     "on the replica host: start a copy VM-test from a recovery point, NICs disconnected, "
     "replication going on (a task)",
     "", true, true},
    {"stop-test", "on the replica host: remove the test failover's VM and its overlays",
     "stopped the test failover of"},
    {"failover",
     "on the replica host, when the primary is lost: start the VM here from a recovery point "
     "(a task; needs --yes)",
     "", true, true, false, false, true,
     "starts it on this host from a recovery point: what the primary wrote after that point is "
     "lost, and replication from the primary ends"},
    {"commit",
     "on the replica host, after failover: keep the failed-over point and delete the VM's "
     "other recovery points (needs --yes)",
     "committed the failover of", false, false, false, false, true,
     "deletes every recovery point but the one failed over to: no going back to another"},
    {"planned-failover",
     "on the primary: last cycle, shut the VM down, send its last writes, start it on the "
     "replica host: no write lost (a task)",
     "", true},
    {"reverse",
     "on the failed-over host: replicate back to the former primary, sending only what "
     "changed since the failover (a task)",
     "", true},
    {"export-initial",
     "on the primary: write the initial copy into DIR (chunks + commit.json) to carry to the "
     "replica host (a task)",
     "", true, false, false, true},
    {"import-initial",
     "on the replica host: apply an initial copy written by export-initial (a task)", "", true,
     false, false, true, false},
};

struct ActionFlags {
    std::string vm, dir;
    long long point = 0;
    bool wait = false, yes = false, on_replica = false;
    CLI::Option* point_option = nullptr;
};

Status run_action(const GlobalOptions& global, const ActionSpec& spec, const ActionFlags& f) {
    const std::string what = std::string("replica ") + spec.name + (spec.vm ? " " + f.vm : "");
    if (spec.confirm && !f.yes)
        return fail(ErrorKind::invalid_argument,
                    what + " " + spec.confirm +
                        ". vmshadow does not ask on the terminal: give --yes to confirm");
    json body = json::object();
    if (spec.point && f.point_option->count()) body["point"] = f.point;
    if (spec.on_replica && f.on_replica) body["on_replica"] = true;
    if (spec.dir) body["dir"] = absolute_dir(f.dir);
    auto c = daemon_connection(global);
    if (!c) return std::unexpected(c.error());
    const std::string vm = spec.vm ? percent_encode(f.vm) : kNoVm;
    auto answer = daemon_call(*c, "POST", "/replicas/" + vm + "/" + spec.name, body);
    if (!answer) return std::unexpected(answer.error());
    if (answer->is_object() && answer->contains("task"))
        return report_started_task(global, *c, *answer, what, f.wait);
    if (global.json)
        std::cout << answer->dump() << std::endl;
    else if (*spec.done)
        std::cout << spec.done << " " << printable(f.vm) << std::endl;
    else
        std::cout << what << ": done" << std::endl;
    return {};
}

void add_action(CLI::App& replica, GlobalOptions& global, Action& action, const ActionSpec& spec) {
    auto f = std::make_shared<ActionFlags>();
    CLI::App* cmd = replica.add_subcommand(spec.name, spec.help);
    if (spec.vm) add_vm(*cmd, f->vm);
    if (spec.dir)
        cmd->add_option("dir", f->dir, "the folder (on this host)")->required()->type_name("DIR");
    if (spec.point)
        f->point_option = add_whole_number_option(*cmd, "--point", f->point, 0, kMaxTaskId,
                                                  "the recovery point's SEQ (`vmshadow replica "
                                                  "points`; default the latest)");
    if (spec.on_replica)
        cmd->add_flag("--on-replica", f->on_replica,
                      "also delete the replica host's copy and recovery points");
    if (spec.long_running)
        cmd->add_flag("--wait", f->wait,
                      "follow the task's log until it ends; exit with its result's exit code");
    if (spec.confirm) cmd->add_flag("-y,--yes", f->yes, std::string("confirm: ") + spec.confirm);
    cmd->callback([&global, &action, &spec, f] {
        action = [&global, &spec, f] { return run_action(global, spec, *f); };
    });
}

}  // namespace

void add_replica_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* replica = app.add_subcommand(
        "replica", "Replica: a VM kept ready on a second host (docs/REPLICA.md), via vmshadowd");
    replica->require_subcommand(1);

    auto enable = std::make_shared<EnableFlags>();
    CLI::App* en = replica->add_subcommand(
        "enable", "replicate a VM of this host to a replica host (operator)");
    add_enable_flags(*en, *enable);
    en->callback([&global, &action, enable] {
        action = [&global, enable] { return run_enable(global, *enable); };
    });

    auto status_vm = std::make_shared<std::string>();
    CLI::App* st = replica->add_subcommand(
        "status", "each replicated VM: role, peer, state, last cycle, RPO, cycle times, sent");
    st->add_option("vm", *status_vm, "only this VM")->check(vm_name_check());
    st->callback([&global, &action, status_vm] {
        action = [&global, status_vm] { return run_status(global, *status_vm); };
    });

    auto points_vm = std::make_shared<std::string>();
    CLI::App* pts =
        replica->add_subcommand("points", "the recovery points the replica host holds of a VM");
    add_vm(*pts, *points_vm);
    pts->callback([&global, &action, points_vm] {
        action = [&global, points_vm] { return run_points(global, *points_vm); };
    });

    for (const auto& spec : kActions) add_action(*replica, global, action, spec);
}

}  // namespace vmshadow::cli
