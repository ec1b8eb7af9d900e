// SPDX-License-Identifier: MIT
// end_leftover_backup (backup_job.h): what a killed vmshadow process left on a domain — its
// backup job, the checkpoint of a job that never finished, scratch files, run directories.
#include <libvirt/libvirt.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <utility>

#include "virt/backup_job.h"
#include "virt/backup_job_detail.h"
#include "virt/checkpoints.h"
#include "virt/libvirt_error.h"
#include "virt/shadow_job.h"

namespace vmshadow::virt {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Locks of dead jobs' directories, held while we clean them (flock is per open file: a
// second open of the same lock in this process would look like a live owner).
using HeldLocks = std::vector<std::pair<fs::path, UniqueFd>>;

// 1. A running backup job: ours (socket under runtime_dir) or foreign. A VM that is not
// running has no job.
Status end_dead_job(const Domain& domain, const fs::path& runtime_dir, const std::string& label,
                    const std::string& uuid, HeldLocks& held, LeftoverReport& report) {
    JobStats current;
    if (virDomainIsActive(domain.raw()) == 1) {
        auto stats = job_stats(domain.raw(), 0, label);
        if (!stats) return fail(stats.error());
        current = *stats;
    }
    if (backup_running(current)) {
        CString xml(virDomainBackupGetXMLDesc(domain.raw(), 0));
        if (!xml) return fail(libvirt_error(label + ": read the running job's XML"));
        pugi::xml_document doc;
        doc.load_string(xml.get());
        auto server = doc.child("domainbackup").child("server");
        fs::path socket = server.attribute("socket").value();
        if (std::string_view(server.attribute("transport").value()) == "unix" &&
            path_under(socket, runtime_dir)) {
            fs::path dir = socket.parent_path();
            auto lock = try_lock(dir);
            if (!lock) return fail(lock.error().with_context(label));
            if (!*lock) {
                return fail(ErrorKind::conflict,
                            domain.label() +
                                ": another vmshadow process is backing this VM up "
                                "(its job holds " +
                                dir.string() + ")");
            }
            held.emplace_back(dir.lexically_normal(), std::move(**lock));
            if (virDomainAbortJob(domain.raw()) < 0) {
                return fail(libvirt_error(label + ": end the job of a vmshadow process that died"));
            }
            if (auto ended = wait_job_end(domain.raw(), label); !ended) return fail(ended.error());
            report.job_ended = true;
            for (auto disk : doc.child("domainbackup").child("disks").children("disk")) {
                fs::path scratch = disk.child("scratch").attribute("file").value();
                if (!scratch.empty() &&
                    scratch.filename().string().starts_with(kScratchPrefix + uuid + ".")) {
                    remove_quietly(scratch, &report.files_removed);
                }
            }
        } else {
            std::string where = socket.empty()
                                    ? "TCP port " + std::string(server.attribute("port").value())
                                    : "socket " + socket.string();
            report.foreign_job = "a backup job not started by vmshadow (NBD on " + where + ")";
            if (auto shadow = shadow_id_of_socket(socket)) report.shadow_id = *shadow;
        }
    }
    return {};
}

// 2. Run directories of this domain whose owner is gone. Gives the tokens of the live ones.
Result<std::vector<std::string>> clean_dead_run_dirs(const Domain& domain,
                                                     const fs::path& runtime_dir,
                                                     const std::string& label,
                                                     const std::string& uuid, HeldLocks& held,
                                                     LeftoverReport& report) {
    std::error_code ec;
    std::vector<std::string> live_tokens;
    for (const auto& entry : fs::directory_iterator(runtime_dir, ec)) {
        std::string name = entry.path().filename().string();
        if (!name.starts_with(uuid + ".")) continue;
        bool ours = std::any_of(held.begin(), held.end(), [&](const auto& h) {
            return h.first == entry.path().lexically_normal();
        });
        if (!ours) {
            auto lock = try_lock(entry.path());
            if (!lock) return fail(lock.error().with_context(label));
            if (!*lock) {
                live_tokens.push_back(name.substr(uuid.size() + 1));
                continue;
            }
            held.emplace_back(entry.path().lexically_normal(), std::move(**lock));
        }
        std::ifstream in(entry.path() / kRecordName);
        json record = json::parse(in, nullptr, false);
        if (!record.is_discarded()) {
            std::string checkpoint = record.value("checkpoint", "");
            if (!checkpoint.empty() && !record.value("finished", false)) {
                auto found = find_checkpoint(domain, checkpoint);
                if (found && *found) {
                    auto deleted = delete_own_checkpoint(domain, checkpoint);
                    if (!deleted) return fail(deleted.error().with_context(label));
                    report.checkpoints_deleted.push_back(checkpoint);
                }
            }
            for (const auto& s : record.value("scratch", json::array())) {
                fs::path scratch = s.get<std::string>();
                if (scratch.filename().string().starts_with(kScratchPrefix + uuid + ".")) {
                    remove_quietly(scratch, &report.files_removed);
                }
            }
        }
        remove_quietly(entry.path(), &report.files_removed);
    }
    return live_tokens;
}

// 3. Scratch files of this domain whose job directory is gone (e.g. /run was wiped).
void remove_orphan_scratch(const fs::path& scratch_dir, const std::string& uuid,
                           const std::vector<std::string>& live_tokens, LeftoverReport& report) {
    std::error_code ec;
    if (!scratch_dir.empty()) {
        for (const auto& entry : fs::directory_iterator(scratch_dir, ec)) {
            std::string name = entry.path().filename().string();
            std::string prefix = kScratchPrefix + uuid + ".";
            if (!name.starts_with(prefix)) continue;
            std::string token = name.substr(prefix.size(), 8);
            if (std::find(live_tokens.begin(), live_tokens.end(), token) != live_tokens.end()) {
                continue;
            }
            remove_quietly(entry.path(), &report.files_removed);
        }
    }
}

}  // namespace

Result<LeftoverReport> end_leftover_backup(const Domain& domain, const fs::path& scratch_dir,
                                           const fs::path& runtime_dir) {
    std::string label = domain.label() + ": leftover backup";
    LeftoverReport report;
    const std::string uuid = domain.uuid();
    HeldLocks held;
    if (auto st = end_dead_job(domain, runtime_dir, label, uuid, held, report); !st)
        return fail(st.error());
    auto live_tokens = clean_dead_run_dirs(domain, runtime_dir, label, uuid, held, report);
    if (!live_tokens) return fail(live_tokens.error());
    remove_orphan_scratch(scratch_dir, uuid, *live_tokens, report);
    return report;
}

}  // namespace vmshadow::virt
