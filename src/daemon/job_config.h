// SPDX-License-Identifier: MIT
#pragma once
// The daemon's configuration file (/etc/vmshadow/vmshadowd.toml, TOML read with toml11):
// daemon settings, repositories, alert targets and jobs; and the same jobs as JSON for the
// API.
//
// This module is: the typed config (DaemonConfig), parsing with every value checked (ranges,
// names, schedules parsed by CalendarEvent, repository names that exist, `after` naming a job
// that exists and no cycle) — an error names the file, the line and the key
// ("vmshadowd.toml:14: jobs.nightly.schedule: ..."); rendering back to TOML (parse(render(c))
// equals c); the digest (SHA-256 hex of the file's bytes) an API edit must carry; JSON for a
// job (the API's body) both ways, with the same checks.
// It is not: the scheduler or the runner; it never touches VMs or repositories.
//
// File format (docs/DAEMON.md has the full reference):
//   [daemon]
//   listen = "127.0.0.1:8470"        # HTTPS API; "" = none (unix socket only)
//   max-concurrent-backups = 1
//   ...
//   [repository.main]
//   path = "/var/lib/vmshadow/repo"
//   password-file = "/etc/vmshadow/repo.pass"
//   [alerts]
//   webhook = "https://hooks.example/x"
//   email = "ops@example.com"
//   [replica]                        # docs/REPLICA.md
//   certificate = "/etc/vmshadow/replica/host.crt"
//   key = "/etc/vmshadow/replica/host.key"
//   ca = "/etc/vmshadow/replica/ca.crt"
//   listen = "127.0.0.2:8471"        # the replica listener; omit: not a replica host
//   endpoint = "hostb.example:8471"  # how peers reach it (default: listen)
//   [[replica.allow]]
//   subject = "CN=hosta"
//   storage = "/var/lib/vmshadow/replicas"
//   [job.nightly]
//   kind = "backup"
//   vms = ["web*", "db1"]            # names or globs; ["*"] = every VM
//   repository = "main"
//   schedule = "Mon..Fri 22:00"
//   keep-daily = 7
//
// Thread-safety: plain values.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow::daemon {

enum class JobKind { backup, verify, prune, check };
enum class CatchUp { one, all, none };
enum class Notify { always, failure, never };

std::string_view job_kind_name(JobKind kind);
std::string_view catch_up_name(CatchUp c);
std::string_view notify_name(Notify n);

// Retention of a backup job (applied after each successful run) or of a prune job; the
// same keep-* rules as `vmshadow prune`. All unset: keep everything.
struct Retention {
    std::optional<unsigned> keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
        keep_yearly;
    bool empty() const;
    bool operator==(const Retention&) const = default;
};

struct JobSpec {
    std::string id;  // [a-z0-9][a-z0-9_-]{0,62}: the TOML table name, the API's {id}
    JobKind kind = JobKind::backup;
    std::string schedule;    // calendar event text (calendar.h); "" = run only when asked
    std::string repository;  // a [repository.NAME]
    // backup, verify: VM names or globs (fnmatch); "*" matches every VM of the host.
    std::vector<std::string> vms;
    std::string method = "auto";     // backup: auto | application | image | crash
    bool group = false;              // backup: one snapshot set for all its VMs
    Retention retention;             // backup: after success; prune: the policy
    bool gc = true;                  // prune: gc after pruning
    bool boot = true;                // verify: boot each VM's latest point (else data only)
    unsigned read_data_percent = 0;  // check: 0..100 of the packs read back per run
    CatchUp catch_up = CatchUp::one;
    std::optional<std::string> after;  // run when this job's run succeeds
    Notify notify = Notify::failure;
    // backup: alert when a VM of this job has had no successful backup for this long, even
    // if the job never ran; 0 = off.
    unsigned alert_after_hours = 0;
    bool enabled = true;
    bool operator==(const JobSpec&) const = default;
};

struct RepositorySpec {
    std::string name;
    std::filesystem::path path;           // a local directory or "s3:https://HOST/BUCKET[/PREFIX]"
    std::filesystem::path password_file;  // "" = the repository is not encrypted
    // An "s3:…" repository's access (docs/DAEMON.md); credentials also from AWS_* in
    // vmshadowd's environment.
    std::filesystem::path s3_credentials;  // TOML credentials file; "" = AWS_* only
    std::filesystem::path cacert;          // PEM CA of the endpoint; "" = the system's
    bool s3_virtual_hosted = false;
    unsigned s3_max_rps = 0;            // 0 = no cap
    unsigned s3_max_bandwidth_mib = 0;  // MiB per second; 0 = no cap
    // How long the daemon's operations wait for a lock another process holds (another
    // host's backup or gc); 0 = fail at once, as before.
    unsigned retry_lock_seconds = 0;
    bool operator==(const RepositorySpec&) const = default;
};

struct AlertTargets {
    std::string webhook;                        // http(s) URL; "" = none
    std::optional<std::string> webhook_sha256;  // pin a self-signed webhook server
    std::string email;                          // address; "" = none
    std::filesystem::path sendmail = "/usr/sbin/sendmail";
    bool operator==(const AlertTargets&) const = default;
};

struct DaemonSettings {
    std::string listen = "127.0.0.1:8470";  // HTTPS; "" = none
    std::string connect_uri;                // libvirt URI; "" = libvirt's default
    std::string scratch_dir = "/var/tmp";
    unsigned max_concurrent_backups = 1;  // 1..64
    unsigned max_concurrent_tasks = 4;    // all kinds, 1..64
    unsigned api_threads = 4;             // 1..64
    unsigned keep_tasks = 1000;           // task history kept by count ...
    unsigned keep_task_days = 30;         // ... and by age
    bool operator==(const DaemonSettings&) const = default;
};

// [replica] (docs/REPLICA.md): this host's identity for Replica, both roles, and the
// primaries allowed to replicate here ([[replica.allow]], Hyper-V's "allow replication from
// these servers / store the files here").
struct ReplicaAllowSpec {
    std::string subject;            // the primary's certificate subject, "CN=hosta"
    std::filesystem::path storage;  // where its VMs' replicas go
    bool operator==(const ReplicaAllowSpec&) const = default;
};

struct ReplicaSettings {
    std::filesystem::path certificate;  // PEM: this host's certificate (client and server)
    std::filesystem::path key;          // PEM: its key
    std::filesystem::path ca;           // PEM: the CA peers' certificates must chain to
    std::string listen;                 // the replica listener ADDRESS:PORT (mutual TLS); "" = none
    std::string endpoint;               // HOST:PORT peers reach the listener at; "" = listen
    std::vector<ReplicaAllowSpec> allow;
    // What peers are told: endpoint, else listen.
    std::string own_endpoint() const { return endpoint.empty() ? listen : endpoint; }
    bool operator==(const ReplicaSettings&) const = default;
};

struct DaemonConfig {
    DaemonSettings daemon;
    std::optional<ReplicaSettings> replica;  // absent: Replica is off on this host
    std::map<std::string, RepositorySpec> repositories;
    AlertTargets alerts;
    std::vector<JobSpec> jobs;  // in file order
    bool operator==(const DaemonConfig&) const = default;

    const JobSpec* job(std::string_view id) const;
};

// Parses and checks TOML text; `file_name` is what errors name.
Result<DaemonConfig> parse_config(std::string_view text, std::string_view file_name);
// The file's config and its digest. A missing file is an empty config (no jobs) whose
// digest is that of "".
struct LoadedConfig {
    DaemonConfig config;
    std::string digest;
};
Result<LoadedConfig> load_config(const std::filesystem::path& file);
// TOML text for the config (comments are not kept).
std::string render_config(const DaemonConfig& config);
// SHA-256 hex of bytes: the digest of a config file's content.
std::string config_digest(std::string_view bytes);
// Checks the whole config (what parse_config checks after reading): used after an API edit.
Status validate_config(const DaemonConfig& config);

nlohmann::json job_to_json(const JobSpec& job);
// invalid_argument naming the field ("job.schedule: ...").
Result<JobSpec> job_from_json(const nlohmann::json& json);

}  // namespace vmshadow::daemon
