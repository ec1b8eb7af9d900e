// SPDX-License-Identifier: MIT
// `vmshadow verify POINT --boot [--exec CMD] [--timeout S]`: boot a restore point in a
// throwaway VM (served from the repository, nothing copied) and record whether it answered.
// When verification fails, the point's chunks are read and verified, so damaged data is named
// (and exits 8) instead of looking like a guest that does not boot.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/numeric_option.h"
#include "cli/repo_cli.h"
#include "engine/boot_verify.h"
#include "engine/vm_point.h"
#include "repo/chunk_map.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct VerifyCommandOptions {
    engine::BootVerifyOptions engine;
    bool boot = false;
    int timeout_s = 300;
};

// Reads every chunk of the point's disks, verified; the first damaged one, if any ("disk vda:
// ..." with the blob and its pack), or why the point could not be read.
std::optional<std::string> find_damage(repo::Repository& repo, const std::string& point) {
    auto opened = engine::open_vm_point(repo, point, "verify", "there is nothing to boot");
    if (!opened) return opened.error().message();
    for (const auto& d : opened->point.disks) {
        repo::ChunkMap map(repo, d.map, d.size, repo.config().chunk_size, repo.config().map_fanout);
        auto st = map.for_each_chunk([&](std::uint64_t, const repo::Hash256& id) -> Status {
            auto blob = repo.read_blob(id);
            if (!blob) return std::unexpected(blob.error());
            return {};
        });
        if (!st) return "disk " + d.name + ": " + st.error().message();
    }
    return std::nullopt;
}

Status run_verify_command(GlobalOptions& global, VerifyCommandOptions o) {
    if (!o.boot) {
        return fail(ErrorKind::invalid_argument,
                    "say what to verify: --boot (the data itself is checked by `vmshadow repo "
                    "check --read-data`)");
    }
    o.engine.timeout = std::chrono::seconds(o.timeout_s);
    if (!global.scratch_dir.empty()) o.engine.work_dir = global.scratch_dir;
    auto connection = virt::Connection::open(global.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    if ((*repo)->config().encrypted) {
        auto password = repository_password(global);
        if (!password) return std::unexpected(password.error());
        o.engine.password = *password;
    }
    o.engine.task = global.task;
    auto r = engine::verify_boot(**repo, *connection, o.engine);
    if (!r) return std::unexpected(r.error());
    // A failed verification: is it the data? (Intact chunks: the guest failed on its own.)
    ErrorKind failure = ErrorKind::cancelled;
    if (!r->ok) {
        if (auto damage = find_damage(**repo, r->point)) {
            r->detail += "; the restore point's data is damaged: " + *damage;
            failure = ErrorKind::corruption;
        }
    }
    if (global.json) {
        json out{{"point", r->point},
                 {"vm", r->vm},
                 {"ok", r->ok},
                 {"detail", r->detail},
                 {"throwaway_vm", r->throwaway},
                 {"agent_seconds", r->agent_seconds ? json(*r->agent_seconds) : json()},
                 {"exec_exit_code", r->exec_exit_code ? json(*r->exec_exit_code) : json()},
                 {"exec_output", r->exec_output},
                 {"seconds", r->seconds}};
        if (!r->ok) {
            out["error"] = "boot verification failed: " + r->detail;
            out["kind"] = kind_name(failure);
            global.error_reported = true;
        }
        std::cout << out.dump() << std::endl;
    } else {
        std::printf("%s %s (VM %s): %s in %.0f s\n", r->ok ? "verified" : "FAILED",
                    r->point.substr(0, 12).c_str(), r->vm.c_str(), r->detail.c_str(), r->seconds);
        if (!r->exec_output.empty()) std::printf("%s", r->exec_output.c_str());
        std::printf("recorded on the restore point (see `vmshadow points %s`)\n", r->vm.c_str());
    }
    if (!r->ok) {
        return fail(failure,
                    "boot verification of " + r->point.substr(0, 12) + " failed: " + r->detail);
    }
    return {};
}

}  // namespace

void add_verify_command(CLI::App& app, GlobalOptions& global, Action& action) {
    auto o = std::make_shared<VerifyCommandOptions>();
    CLI::App* verify = app.add_subcommand(
        "verify",
        "prove a restore point boots: run it in a throwaway VM without network, served from the "
        "repository (nothing copied), check its guest agent answers and, with --exec, that a "
        "command in the guest succeeds; the result is recorded on the point");
    verify->add_option("point", o->engine.point, "restore point: id, unique id prefix or VM@latest")
        ->required();
    verify->add_flag("--boot", o->boot, "boot it (the only check so far; required)");
    verify->add_option("--exec", o->engine.exec,
                       "shell command to run in the guest once it answers; must exit 0");
    add_whole_number_option(*verify, "--timeout", o->timeout_s, 1, 86400,
                            "seconds for the boot (and the command) before it counts as failed "
                            "(default 300)");
    verify->callback([&global, &action, o] {
        action = [&global, o] { return run_verify_command(global, *o); };
    });
}

}  // namespace vmshadow::cli
