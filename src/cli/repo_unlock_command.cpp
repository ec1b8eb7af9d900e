// SPDX-License-Identifier: MIT
// `vmshadow repo unlock [--remove-all]`: remove locks whose process is known to be gone; stops the
// NBD servers of abandoned instant recoveries.
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/repo_cli.h"
#include "cli/repo_commands.h"
#include "engine/instant_recovery.h"
#include "repo/lock.h"

namespace vmshadow::cli {

using nlohmann::json;

namespace {

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

}  // namespace

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
                                        : ": if it still runs, it stops at its next lock "
                                          "refresh (within 5 minutes) without publishing")
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

void add_repo_unlock_command(CLI::App& repo, GlobalOptions& global, Action& action) {
    auto remove_all = std::make_shared<bool>(false);
    CLI::App* unlock =
        repo.add_subcommand("unlock", "remove locks whose process is known to be gone (this host)");
    unlock->add_flag("--remove-all", *remove_all,
                     "remove every lock, also other hosts' and live ones: only when you know "
                     "their processes are gone");
    unlock->callback([&global, &action, remove_all] {
        action = [&global, remove_all] { return run_unlock(global, *remove_all); };
    });
}

}  // namespace vmshadow::cli
