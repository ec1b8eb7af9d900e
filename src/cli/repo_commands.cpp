// SPDX-License-Identifier: MIT
// `vmshadow repo init|check|repair index|unlock|stats|key …`, and the registration of every
// repository command.
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "cli/numeric_option.h"
#include "cli/repo_cli.h"
#include "common/byte_size.h"
#include "engine/vm_restore.h"
#include "repo/check.h"
#include "repo/format.h"
#include "repo/keys.h"
#include "repo/lock.h"
#include "repo/repair.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct InitOptions {
    std::string path;
    bool encrypt = false;
    std::string new_password_file;
    int zstd_level = 0;
};

Status run_init(const GlobalOptions& global, const InitOptions& o) {
    std::string path = o.path.empty() ? global.repo : o.path;
    if (path.empty())
        return fail(ErrorKind::invalid_argument, "repo init needs a PATH (or --repo)");
    repo::InitOptions init;
    init.encrypt = o.encrypt;
    init.zstd_level = o.zstd_level;
    if (o.encrypt) {
        // The first password may also come from the ordinary sources (VMSHADOW_PASSWORD,
        // --password-file), so scripts can init and use a repository with one setting.
        Result<std::string> password =
            !o.new_password_file.empty() || std::getenv("VMSHADOW_NEW_PASSWORD")
                ? new_password(o.new_password_file, "VMSHADOW_NEW_PASSWORD", "new password")
            : std::getenv("VMSHADOW_PASSWORD") || !global.password_file.empty()
                ? repository_password(global)
                : new_password("", "VMSHADOW_PASSWORD", "new repository password");
        if (!password) return std::unexpected(password.error());
        init.password = *password;
    }
    if (auto st = repo::Repository::init(path, init); !st) return st;
    if (global.json)
        std::cout << json{{"repository", path}, {"encrypted", o.encrypt}}.dump() << std::endl;
    else
        std::cout << "created " << (o.encrypt ? "encrypted " : "") << "repository at " << path
                  << std::endl;
    return {};
}

Status run_check(GlobalOptions& global, bool read_data) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::shared, "repo check");
    if (!lock) return std::unexpected(lock.error());
    repo::CheckOptions options;
    options.read_data = read_data;
    auto report = repo::check_repository(**repo, options);
    if (!report) return std::unexpected(report.error());
    std::optional<Error> failure;
    if (!report->ok()) {
        std::string msg =
            "repository check found " + std::to_string(report->problems.size()) + " problem(s)";
        if (!report->damaged_points.empty())
            msg += "; damaged restore points: " + std::to_string(report->damaged_points.size()) +
                   " (first: " + report->damaged_points.front() + ")";
        failure = Error(ErrorKind::corruption, msg);
    }
    if (global.json) {
        json out{{"ok", report->ok()},
                 {"index_files", report->index_files},
                 {"packs", report->packs},
                 {"blobs", report->blobs},
                 {"points", report->points},
                 {"read_data", read_data},
                 {"bytes_read", report->bytes_read},
                 {"problems", report->problems},
                 {"damaged_points", report->damaged_points},
                 {"warnings", report->warnings},
                 {"unreferenced",
                  {{"blobs", report->unreferenced_blobs},
                   {"packs", report->unreferenced_packs},
                   {"packs_within_grace", report->unreferenced_young},
                   {"stored_bytes", report->unreferenced_bytes}}}};
        // The report is the one object on stdout; on failure it carries the error too.
        if (failure) {
            out["error"] = failure->message();
            out["kind"] = kind_name(failure->kind());
            global.error_reported = true;
        }
        std::cout << out.dump() << std::endl;
    } else {
        std::cout << "checked " << report->points << " restore points, " << report->packs
                  << " packs, " << report->blobs << " blobs"
                  << (read_data ? " (all data read and verified)" : "") << std::endl;
        for (const auto& w : report->warnings) std::cout << "warning: " << w << std::endl;
        for (const auto& p : report->problems) std::cout << "error: " << p << std::endl;
        for (const auto& p : report->damaged_points)
            std::cout << "damaged restore point: " << p << std::endl;
    }
    if (failure) return fail(*failure);
    if (!global.json)
        std::cout << "no errors were found"
                  << (report->warnings.empty()
                          ? std::string()
                          : " (" + std::to_string(report->warnings.size()) + " warning(s) above)")
                  << std::endl;
    return {};
}

Status run_stats(const GlobalOptions& global) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::shared, "repo stats");
    if (!lock) return std::unexpected(lock.error());
    if (auto st = (*repo)->load_index(); !st) return st;
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    const repo::Index& index = (*repo)->index();
    std::uint64_t stored = 0;
    for (std::size_t i = 0; i < index.packs().size(); ++i) stored += index.pack_size(i);
    std::uint64_t logical = 0;
    std::set<std::string> vms;
    for (const auto& p : listing->points) {
        vms.insert(p.vm);
        for (const auto& d : p.disks) logical += d.size;
    }
    const auto& c = (*repo)->config();
    json j{{"repository", global.repo},   {"format_version", c.format_version},
           {"encrypted", c.encrypted},    {"chunk_size", c.chunk_size},
           {"zstd_level", c.zstd_level},  {"points", listing->points.size()},
           {"vms", vms.size()},           {"packs", index.packs().size()},
           {"blobs", index.blob_count()}, {"stored_bytes", stored},
           {"disk_bytes_total", logical}, {"damaged_records", listing->damaged.size()}};
    if (global.json) {
        std::cout << j.dump() << std::endl;
        return {};
    }
    std::cout << "repository:     " << global.repo << " (format " << c.format_version
              << (c.encrypted ? ", encrypted" : ", not encrypted") << ")\n"
              << "restore points: " << listing->points.size() << " of " << vms.size()
              << " VM(s)/image(s)\n"
              << "stored:         " << format_bytes(stored) << " in " << index.packs().size()
              << " packs, " << index.blob_count() << " blobs\n"
              << "disks covered:  " << format_bytes(logical) << " (sum of virtual sizes)"
              << std::endl;
    return {};
}

Status run_repair_index(GlobalOptions& global, bool read_data) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    repo::RepairIndexOptions options;
    options.read_data = read_data;
    auto report = repo::repair_index(**repo, options);
    if (!report) return std::unexpected(report.error());
    std::optional<Error> error;
    if (!report->ok()) {
        std::string what;
        if (!report->skipped.empty())
            what = "left out " + std::to_string(report->skipped.size()) + " damaged pack(s)";
        if (!report->missing_packs.empty())
            what += (what.empty() ? "" : " and ") + std::string("found ") +
                    std::to_string(report->missing_packs.size()) + " pack(s) missing";
        error = Error(ErrorKind::corruption,
                      "repair index " + what +
                          "; restore points that need them stay damaged (see `vmshadow repo "
                          "check`)");
    }
    if (global.json) {
        json skipped = json::array();
        for (const auto& s : report->skipped) skipped.push_back({{"path", s.path}, {"why", s.why}});
        json out{{"ok", report->ok()},
                 {"packs_indexed", report->packs_indexed},
                 {"blobs", report->blobs},
                 {"read_data", read_data},
                 {"bytes_read", report->bytes_read},
                 {"packs_skipped", skipped},
                 {"packs_missing", report->missing_packs},
                 {"new_index", report->new_index ? json(report->new_index->hex()) : json(nullptr)},
                 {"index_files_replaced", report->index_files_replaced},
                 {"damaged_index_files", report->damaged_index_files}};
        if (error) {
            out["error"] = error->message();
            out["kind"] = kind_name(error->kind());
            global.error_reported = true;
        }
        std::cout << out.dump() << std::endl;
    } else {
        std::cout << "indexed " << report->packs_indexed << " packs, " << report->blobs << " blobs"
                  << (read_data ? " (all data read and verified against pack names)" : "");
        if (report->new_index) std::cout << ", into index file " << report->new_index->hex();
        std::cout << std::endl;
        for (const auto& d : report->damaged_index_files)
            std::cout << "damaged: " << d << std::endl;
        std::cout << "replaced " << report->index_files_replaced.size() << " index file(s)"
                  << std::endl;
        for (const auto& s : report->skipped)
            std::cout << "skipped pack " << s.path << ": " << s.why << std::endl;
        for (const auto& m : report->missing_packs)
            std::cout << "missing pack " << m << ": an old index named it; its chunks are lost"
                      << std::endl;
        if (!report->skipped.empty())
            std::cout << "note: skipped packs were left in data/ but are in no index, so the next "
                         "backup or gc deletes them; move them elsewhere to keep them"
                      << std::endl;
    }
    if (error) return std::unexpected(*error);
    return {};
}

Status run_repair_records(const GlobalOptions& global) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto moved = repo::repair_records(**repo);
    if (!moved) return std::unexpected(moved.error());
    if (global.json) {
        json arr = json::array();
        for (const auto& q : *moved)
            arr.push_back({{"path", q.path}, {"why", q.why}, {"points_kept", q.kept}});
        std::cout << json{{"quarantined", arr}}.dump() << std::endl;
        return {};
    }
    for (const auto& q : *moved)
        std::cout << "quarantined " << q.path << ": " << q.why
                  << (q.kept ? "; its " + std::to_string(q.kept) +
                                   " sound point(s) were kept in a new commit record"
                             : std::string())
                  << std::endl;
    std::cout << "moved " << moved->size() << " damaged record(s) to "
              << (*repo)->dir(repo::format::kQuarantineDir) << "/";
    if (!moved->empty())
        std::cout << "; the data only they referenced is unreferenced now and gc removes it once "
                     "it is older than the grace period";
    std::cout << std::endl;
    return {};
}

std::string describe_lock(const repo::LockInfo& l, std::int64_t now) {
    if (!l.readable) return "unreadable lock file " + l.id;
    std::string age = "unknown age";
    if (l.since > now) {
        age = "time in the future";
    } else if (l.since > 0) {
        std::int64_t s = std::max<std::int64_t>(0, now - l.since);
        age = s >= 86400  ? std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600) + "h"
              : s >= 3600 ? std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m"
              : s >= 60   ? std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s"
                          : std::to_string(s) + "s";
        age += " old";
    }
    return std::string(l.exclusive ? "exclusive" : "shared") + " lock of `" + l.operation +
           "` (pid " + std::to_string(l.pid) + " on " + l.host + ", since " + l.time + ", " + age +
           ")";
}

// What `repo unlock` found about the NBD servers of instant recoveries whose vmshadow is gone.
struct ExportVerdicts {
    std::vector<std::string> stopped;         // servers that served no VM, stopped
    std::map<std::string, std::string> kept;  // lock id → why its live server stays
};

// A live lock held by an instant recovery's server: servers no VM runs on only hold the
// lock, so they are stopped (and their lock goes); one a VM runs on stays, explained.
ExportVerdicts stop_abandoned_exports(const GlobalOptions& global,
                                      const std::vector<repo::LockInfo>& locks) {
    ExportVerdicts verdicts;
    std::optional<Result<virt::Connection>> connection;
    std::set<std::string> done;
    for (const auto& l : locks) {
        auto record = l.readable && !l.holder_dead ? engine::instant_record_of_lock(l.operation)
                                                   : std::nullopt;
        if (!record) continue;
        if (!connection) connection = virt::Connection::open(global.connect_uri);
        if (!*connection) {
            verdicts.kept[l.id] =
                "cannot ask libvirt whether a VM runs on it: " + (*connection).error().message();
            continue;
        }
        auto verdict = engine::stop_abandoned_instant_servers(**connection, *record);
        if (!verdict)
            verdicts.kept[l.id] = verdict.error().message();
        else if (!verdict->stopped)
            verdicts.kept[l.id] = verdict->message;
        else if (done.insert(*record).second)
            verdicts.stopped.push_back(verdict->message);
    }
    return verdicts;
}

Status run_unlock(const GlobalOptions& global, bool remove_all) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    ExportVerdicts exports;
    if (auto listed = repo::list_locks((*repo)->env(), (*repo)->root()); listed)
        exports = stop_abandoned_exports(global, *listed);
    // No lock is taken: the point is to remove locks, and a lock of our own would conflict.
    auto removed = repo::remove_locks((*repo)->env(), (*repo)->root(), remove_all);
    if (!removed) return std::unexpected(removed.error());
    auto kept = repo::list_locks((*repo)->env(), (*repo)->root());
    if (!kept) return std::unexpected(kept.error());
    std::int64_t now = ::time(nullptr);
    auto to_json = [now](const repo::LockInfo& l) {
        return json{{"id", l.id},
                    {"readable", l.readable},
                    {"host", l.host},
                    {"pid", l.pid},
                    {"exclusive", l.exclusive},
                    {"operation", l.operation},
                    {"time", l.time},
                    {"age_s", l.since > 0 ? json(now - l.since) : json(nullptr)},
                    {"holder_dead", l.holder_dead}};
    };
    auto kept_why = [&exports](const repo::LockInfo& l) {
        auto it = exports.kept.find(l.id);
        return it == exports.kept.end() ? std::string() : it->second;
    };
    // Removing a lock a live process holds is the user's responsibility: say what went.
    if (remove_all)
        for (const auto& l : *removed)
            std::cerr << "warning: removed " << describe_lock(l, now)
                      << (l.holder_dead ? ": its process was gone"
                          : !l.readable ? ": whoever wrote it, if still running, is no longer "
                                          "protected"
                                        : ": if it still runs, it is no longer protected")
                      << std::endl;
    if (global.json) {
        json r = json::array(), k = json::array();
        for (const auto& l : *removed) r.push_back(to_json(l));
        for (const auto& l : *kept) {
            k.push_back(to_json(l));
            if (auto why = kept_why(l); !why.empty()) k.back()["why"] = why;
        }
        std::cout << json{{"removed", r}, {"kept", k}, {"stopped_servers", exports.stopped}}.dump()
                  << std::endl;
        return {};
    }
    if (!remove_all)
        for (const auto& l : *removed)
            std::cout << "removed " << describe_lock(l, now) << ": its process is gone"
                      << std::endl;
    for (const auto& m : exports.stopped) std::cout << m << std::endl;
    for (const auto& l : *kept) {
        std::string why = kept_why(l);
        std::cout << "kept " << describe_lock(l, now)
                  << (!l.readable    ? ": not a lock this vmshadow can read; it counts as held and "
                                       "blocks every operation that locks until `vmshadow repo "
                                       "unlock --remove-all` removes it"
                      : !why.empty() ? ": " + why
                      : l.host.empty() || l.holder_dead ? ""
                                                        : ": its holder may be running")
                  << std::endl;
    }
    std::cout << "removed " << removed->size() << " lock(s)";
    if (!kept->empty())
        std::cout << "; " << kept->size()
                  << " kept (`vmshadow repo unlock --remove-all` removes them once you know "
                     "their processes are gone)";
    std::cout << std::endl;
    return {};
}

struct KeyOptions {
    std::string new_password_file;
    std::string key_id;
};

Status run_key(const GlobalOptions& global, const std::string& verb, const KeyOptions& o) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    const repo::MasterKey* key = (*repo)->master_key();
    if (!key) return fail(ErrorKind::invalid_argument, "repository is not encrypted: no keys");
    repo::Env& env = (*repo)->env();
    const std::string& root = (*repo)->root();
    if (verb == "list") {
        auto ids = repo::list_keys(env, root);
        if (!ids) return std::unexpected(ids.error());
        json arr = json::array();
        for (const auto& id : *ids)
            arr.push_back({{"id", id}, {"current", id == (*repo)->key_id()}});
        if (global.json)
            std::cout << arr.dump() << std::endl;
        else
            for (const auto& k : arr)
                std::cout << (k["current"].get<bool>() ? "* " : "  ") << k["id"].get<std::string>()
                          << std::endl;
        return {};
    }
    if (verb == "add" || verb == "passwd") {
        auto password = new_password(o.new_password_file, "VMSHADOW_NEW_PASSWORD", "new password");
        if (!password) return std::unexpected(password.error());
        auto id = repo::add_key(env, root, *key, *password, repo::ScryptParams{});
        if (!id) return std::unexpected(id.error());
        if (verb == "passwd")
            if (auto st = repo::remove_key(env, root, (*repo)->key_id()); !st) return st;
        std::cout << (verb == "add" ? "added key " : "password changed; new key ") << *id
                  << std::endl;
        return {};
    }
    // remove
    auto ids = repo::list_keys(env, root);
    if (!ids) return std::unexpected(ids.error());
    if (o.key_id == (*repo)->key_id())
        return fail(ErrorKind::invalid_argument,
                    "refusing to remove the key this password opened; open the repository with "
                    "another password to remove it");
    if (ids->size() <= 1)
        return fail(ErrorKind::invalid_argument, "refusing to remove the last key");
    if (auto st = repo::remove_key(env, root, o.key_id); !st) return st;
    std::cout << "removed key " << o.key_id << std::endl;
    return {};
}

}  // namespace

void add_repo_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* repo = app.add_subcommand("repo", "create, check and inspect a repository");
    repo->require_subcommand(1);

    auto init = std::make_shared<InitOptions>();
    CLI::App* init_cmd = repo->add_subcommand("init", "create a repository");
    init_cmd->add_option("path", init->path, "directory to create (default: --repo)");
    init_cmd->add_flag("--encrypt", init->encrypt,
                       "encrypt with AES-256-GCM under a key derived from a password");
    init_cmd->add_option("--new-password-file", init->new_password_file,
                         "file whose first line is the new password");
    add_whole_number_option(*init_cmd, "--compression-level", init->zstd_level, 1, 22,
                            "zstd level for this repository, 1-22 (default: " +
                                std::to_string(repo::format::kDefaultZstdLevel) + ")");
    init_cmd->callback(
        [&global, &action, init] { action = [&global, init] { return run_init(global, *init); }; });

    auto read_data = std::make_shared<bool>(false);
    CLI::App* check = repo->add_subcommand(
        "check",
        "verify index, packs, manifests and chunk maps; exit 8 on any damage (unreferenced "
        "data is a warning)");
    check->add_flag("--read-data", *read_data, "also read every chunk and verify its hash");
    check->callback([&global, &action, read_data] {
        action = [&global, read_data] { return run_check(global, *read_data); };
    });

    CLI::App* repair =
        repo->add_subcommand("repair", "rebuild what can be rebuilt from the data itself");
    repair->require_subcommand(1);
    auto repair_read_data = std::make_shared<bool>(false);
    CLI::App* repair_index = repair->add_subcommand(
        "index",
        "rebuild the index from the pack files (exclusive lock); exit 8 when a pack had "
        "to be left out");
    repair_index->add_flag("--read-data", *repair_read_data,
                           "also read every pack and leave out those whose content does not "
                           "match their name");
    repair_index->callback([&global, &action, repair_read_data] {
        action = [&global, repair_read_data] {
            return run_repair_index(global, *repair_read_data);
        };
    });
    repair
        ->add_subcommand("records",
                         "move damaged commit records and annotations to quarantine/ (exclusive "
                         "lock), so gc and prune can run again")
        ->callback(
            [&global, &action] { action = [&global] { return run_repair_records(global); }; });

    auto remove_all = std::make_shared<bool>(false);
    CLI::App* unlock = repo->add_subcommand(
        "unlock", "remove locks whose process is known to be gone (this host)");
    unlock->add_flag("--remove-all", *remove_all,
                     "remove every lock, also other hosts' and live ones: only when you know "
                     "their processes are gone");
    unlock->callback([&global, &action, remove_all] {
        action = [&global, remove_all] { return run_unlock(global, *remove_all); };
    });

    repo->add_subcommand("stats", "sizes and counts")->callback([&global, &action] {
        action = [&global] { return run_stats(global); };
    });

    CLI::App* key = repo->add_subcommand("key", "manage the passwords of an encrypted repository");
    key->require_subcommand(1);
    auto ko = std::make_shared<KeyOptions>();
    for (const char* verb : {"add", "passwd", "list", "remove"}) {
        std::string v = verb;
        std::string help = v == "add"      ? "add a password"
                           : v == "passwd" ? "change the password used to open the repository"
                           : v == "list"   ? "list key ids (* = opened by this password)"
                                           : "remove a key (not the one in use, not the last)";
        CLI::App* sub = key->add_subcommand(v, help);
        if (v == "add" || v == "passwd")
            sub->add_option("--new-password-file", ko->new_password_file,
                            "file whose first line is the new password "
                            "(default: $VMSHADOW_NEW_PASSWORD or a prompt)");
        if (v == "remove")
            sub->add_option("id", ko->key_id, "key id (see `repo key list`)")->required();
        sub->callback([&global, &action, ko, v] {
            action = [&global, ko, v] { return run_key(global, v, *ko); };
        });
    }
}

void add_repository_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    app.add_option("--password-file", global.password_file,
                   "file whose first line is the repository password (else $VMSHADOW_PASSWORD, "
                   "else a prompt)");
    add_repo_commands(app, global, action);
    add_image_commands(app, global, action);
    add_points_commands(app, global, action);
    add_prune_commands(app, global, action);
    // Global options (--json, --repo, --password-file) may follow these subcommands too:
    // `vmshadow points --json`.
    std::function<void(CLI::App*)> fall = [&fall](CLI::App* a) {
        a->fallthrough();
        for (CLI::App* sub : a->get_subcommands({})) fall(sub);
    };
    for (const char* name : {"repo", "image", "points", "forget", "annotate", "prune", "gc"})
        fall(app.get_subcommand(name));
}

}  // namespace vmshadow::cli
