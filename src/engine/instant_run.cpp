// SPDX-License-Identifier: MIT
#include "engine/instant_run.h"

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "engine/instant_recovery.h"

namespace vmshadow::engine {

namespace fs = std::filesystem;

Status InstantRun::save() const {
    nlohmann::json j{{"version", 1},
                     {"vm", vm},
                     {"uuid", uuid},
                     {"point", point},
                     {"resume", resume},
                     {"sockets", sockets.string()},
                     {"disks", nlohmann::json::array()}};
    for (const auto& d : disks) {
        j["disks"].push_back({{"name", d.name},
                              {"socket", d.socket},
                              {"overlay", d.overlay},
                              {"pidfile", d.pidfile},
                              {"log", d.log},
                              {"final", d.final_path},
                              {"pid", d.server.pid},
                              {"start_time", d.server.start_time},
                              {"session_pid", d.session.pid},
                              {"session_start_time", d.session.start_time},
                              {"pivoted", d.pivoted}});
    }
    return write_file_atomically(work / kInstantRecord, j.dump(2) + "\n", 0600);
}

void InstantRun::stop_servers() const {
    for (const auto& d : disks) {
        (void)stop_process(d.server, std::chrono::seconds(10));
        (void)stop_session(d.session, std::chrono::seconds(10));
    }
    for (const auto& p : processes_with_argument("overlay=" + work.string() + "/"))
        (void)stop_process(p, std::chrono::seconds(10));
}

void InstantRun::remove() const {
    stop_servers();
    std::error_code ec;
    fs::remove_all(work, ec);
    fs::remove_all(sockets, ec);
}

Result<InstantRun> InstantRun::load(const fs::path& work) {
    std::ifstream in(work / kInstantRecord);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!in.is_open() || j.is_discarded() || j.value("version", 0) != 1)
        return fail(ErrorKind::corruption,
                    (work / kInstantRecord).string() + " is missing or unreadable");
    InstantRun run;
    run.work = work;
    run.sockets = j.value("sockets", "");
    run.vm = j.value("vm", "");
    run.uuid = j.value("uuid", "");
    run.point = j.value("point", "");
    run.resume = j.value("resume", "");
    for (const auto& d : j.value("disks", nlohmann::json::array())) {
        InstantDisk disk;
        disk.name = d.value("name", "");
        disk.socket = d.value("socket", "");
        disk.overlay = d.value("overlay", "");
        disk.pidfile = d.value("pidfile", "");
        disk.log = d.value("log", "");
        disk.final_path = d.value("final", "");
        disk.server = {d.value("pid", -1), d.value("start_time", "")};
        disk.session = {d.value("session_pid", -1), d.value("session_start_time", "")};
        disk.pivoted = d.value("pivoted", false);
        run.disks.push_back(std::move(disk));
    }
    return run;
}

std::string resume_command(const VmRestoreOptions& options, const std::string& point) {
    std::string cmd = "vmshadow restore " + point.substr(0, 12) + " --instant";
    if (options.as_name) cmd += " --as " + *options.as_name;
    if (!options.to_dir.empty()) cmd += " --to " + options.to_dir;
    return cmd;
}

constexpr const char* kInstantOwner = "instant recovery (record ";

std::string instant_owner(const InstantRun& run) {
    std::error_code ec;
    fs::path record = fs::absolute(run.work / kInstantRecord, ec);
    return std::string(kInstantOwner) + record.string() + ") of '" + run.vm + "'";
}

std::optional<std::string> instant_record_of_lock(const std::string& operation) {
    const std::string prefix = std::string("nbd export for ") + kInstantOwner;
    if (!operation.starts_with(prefix)) return std::nullopt;
    auto close = operation.find(") of '", prefix.size());
    if (close == std::string::npos) return std::nullopt;
    return operation.substr(prefix.size(), close - prefix.size());
}

Result<AbandonedInstantRun> stop_abandoned_instant_servers(const virt::Connection& connection,
                                                           const std::string& record) {
    fs::path work = fs::path(record).parent_path();
    std::error_code ec;
    if (fs::path(record).filename() != kInstantRecord || !fs::exists(record, ec))
        return fail(ErrorKind::not_found, "no instant recovery record at " + record);
    auto run = InstantRun::load(work);
    if (!run) return std::unexpected(run.error());
    auto vm = connection.lookup(run->vm);
    if (!vm && vm.error().kind() != ErrorKind::not_found) return std::unexpected(vm.error());
    bool runs_on_them = vm && (run->uuid.empty() ? !vm->is_persistent() : vm->uuid() == run->uuid);
    std::string again =
        run->resume.empty() ? "the same `vmshadow restore --instant`" : "`" + run->resume + "`";
    if (runs_on_them) {
        return AbandonedInstantRun{
            false, "VM '" + run->vm +
                       "' runs on it (an instant recovery whose vmshadow is gone): " + again +
                       " finishes the recovery and stops it"};
    }
    run->stop_servers();
    return AbandonedInstantRun{
        true,
        "stopped the NBD server(s) of an interrupted instant recovery of '" + run->vm +
            "' (no VM runs on them); " +
            (run->uuid.empty()
                 ? again + " cleans up and starts over"
                 : "its VM is gone: the guest's writes since it started are in " + work.string() +
                       "/*.overlay; remove that folder and the VM's "
                       "files to start over")};
}

}  // namespace vmshadow::engine
