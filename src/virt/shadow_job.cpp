// SPDX-License-Identifier: MIT
// A shadow copy's libvirt job (shadow_job.h), built from the backup job's pieces
// (backup_job_detail.h) so the XML, the statistics and the end of a job are read one way.
#include "virt/shadow_job.h"

#include <libvirt/virterror.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <pugixml.hpp>

#include "common/os_error.h"
#include "virt/backup_job_detail.h"
#include "virt/libvirt_error.h"
#include "virt/qemu_img.h"

namespace vmshadow::virt {
namespace fs = std::filesystem;

fs::path shadow_socket_dir(const fs::path& dir, const std::string& id) {
    return dir / (std::string(kShadowDirPrefix) + id);
}

std::optional<std::string> shadow_id_of_socket(const fs::path& socket) {
    if (socket.filename() != kSocketName) return std::nullopt;
    std::string folder = socket.parent_path().filename().string();
    if (!folder.starts_with(kShadowDirPrefix) ||
        folder.size() == std::string(kShadowDirPrefix).size())
        return std::nullopt;
    return folder.substr(std::string(kShadowDirPrefix).size());
}

Result<std::vector<std::string>> shadowable_disks(const Domain& domain) {
    auto described = domain.describe();
    if (!described) return fail(described.error());
    std::vector<std::string> disks;
    for (const auto& d : described->disks) {
        if (disk_is_backed_up(d)) disks.push_back(d.target);
    }
    return disks;
}

namespace {

void remove_plan_files(const ShadowJobPlan& plan) {
    std::error_code ec;
    for (const auto& d : plan.disks) fs::remove(d.scratch, ec);
    if (!plan.socket.empty()) fs::remove_all(plan.socket.parent_path(), ec);
}

Status plan_disks(const Domain& domain, const DomainDescription& described, const std::string& id,
                  const std::vector<std::string>& disks, const fs::path& scratch_dir,
                  ShadowJobPlan& plan) {
    const std::string label = domain.label() + ": shadow copy";
    for (const auto& target : disks) {
        if (std::count(disks.begin(), disks.end(), target) > 1)
            return fail(ErrorKind::invalid_argument, label + ": disk " + target + " listed twice");
        auto d = std::find_if(described.disks.begin(), described.disks.end(),
                              [&](const DiskSpec& s) { return s.target == target; });
        if (d == described.disks.end())
            return fail(ErrorKind::not_found, label + ": the VM has no disk '" + target +
                                                  "' (see `virsh domblklist " + domain.name() +
                                                  "`)");
        std::string why;
        if (!disk_is_backed_up(*d, &why))
            return fail(ErrorKind::invalid_argument,
                        label + ": disk " + target + " cannot be shadowed (" + why + ")");
        auto info = domain.block_info(target);
        if (!info) return fail(info.error().with_context(label));
        ShadowDisk disk;
        disk.target = target;
        disk.export_name = target;
        disk.size = info->capacity;
        disk.scratch = scratch_dir / (std::string(kShadowDirPrefix) + id + "-" + target + ".qcow2");
        plan.disks.push_back(std::move(disk));
    }
    return {};
}

}  // namespace

Result<ShadowJobPlan> prepare_shadow_job(const Domain& domain, const std::string& id,
                                         const std::vector<std::string>& disks,
                                         const fs::path& scratch_dir,
                                         const fs::path& socket_parent) {
    const std::string label = domain.label() + ": shadow copy";
    if (disks.empty()) return fail(ErrorKind::invalid_argument, label + ": no disks to shadow");
    if (!scratch_dir.is_absolute() || !socket_parent.is_absolute())
        return fail(ErrorKind::invalid_argument,
                    label + ": the scratch and shadow directories must be absolute paths");
    auto described = domain.describe();
    if (!described) return fail(described.error().with_context(label));
    ShadowJobPlan plan;
    if (auto st = plan_disks(domain, *described, id, disks, scratch_dir, plan); !st)
        return fail(st.error());

    fs::path dir = shadow_socket_dir(socket_parent, id);
    std::error_code ec;
    fs::create_directories(socket_parent, ec);
    if (::mkdir(dir.c_str(), 0700) != 0)
        return fail(os_error(label + ": create " + dir.string(), errno));
    plan.socket = dir / kSocketName;
    if (plan.socket.string().size() >= sizeof(sockaddr_un{}.sun_path)) {
        remove_plan_files(plan);
        return fail(ErrorKind::invalid_argument,
                    label + ": socket path " + plan.socket.string() +
                        " is too long: choose a shorter $VMSHADOW_SHADOW_DIR");
    }
    fs::create_directories(scratch_dir, ec);
    for (const auto& d : plan.disks) {
        if (auto st = create_qcow2(d.scratch.string(), d.size); !st) {
            remove_plan_files(plan);
            return fail(st.error().with_context(label + ", disk " + d.target));
        }
    }
    BackupSpec spec;
    spec.disks = disks;
    spec.scratch_dir = scratch_dir;
    std::vector<BackupExport> exports;
    for (const auto& d : plan.disks) {
        BackupExport e;
        e.target = d.target;
        e.size = d.size;
        e.scratch = d.scratch;
        exports.push_back(std::move(e));
    }
    plan.backup_xml = build_job_xml(spec, *described, exports, plan.socket).backup;
    return plan;
}

namespace {

// The socket the domain's running backup job serves, or "" when none runs.
Result<fs::path> running_job_socket(const Domain& domain, const std::string& label) {
    if (virDomainIsActive(domain.raw()) != 1) return fs::path();
    auto stats = job_stats(domain.raw(), 0, label);
    if (!stats) return fail(stats.error());
    if (!backup_running(*stats)) return fs::path();
    CString xml(virDomainBackupGetXMLDesc(domain.raw(), 0));
    if (!xml) {
        // The job ended between the two calls.
        if (virDomainIsActive(domain.raw()) != 1) return fs::path();
        auto again = job_stats(domain.raw(), 0, label);
        if (again && !backup_running(*again)) return fs::path();
        return fail(libvirt_error(label + ": read the running job's XML"));
    }
    pugi::xml_document doc;
    doc.load_string(xml.get());
    return fs::path(doc.child("domainbackup").child("server").attribute("socket").value());
}

}  // namespace

Status begin_shadow_job(const Domain& domain, const ShadowJobPlan& plan) {
    const std::string label = domain.label() + ": shadow copy";
    int rc = virDomainBackupBegin(domain.raw(), plan.backup_xml.c_str(), nullptr,
                                  VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL);
    if (rc == 0) return {};
    Error e = libvirt_error(label);
    auto socket = running_job_socket(domain, label);
    if (socket && !socket->empty()) {
        auto other = shadow_id_of_socket(*socket);
        std::string hint = other
                               ? " (shadow copy " + *other +
                                     " holds this VM's backup job, and libvirt allows one per VM: "
                                     "`vmshadow shadow delete " +
                                     *other + "` first)"
                               : " (a backup job runs on this VM, serving " + socket->string() +
                                     "; libvirt allows one per VM: retry when it has finished)";
        return fail(ErrorKind::conflict, e.message() + hint);
    }
    return fail(e);
}

Status describe_shadow_job(const Domain& domain, ShadowJobPlan& plan) {
    const std::string label = domain.label() + ": shadow copy";
    CString xml(virDomainBackupGetXMLDesc(domain.raw(), 0));
    if (!xml) return fail(libvirt_error(label + ": read the job's XML"));
    pugi::xml_document doc;
    if (!doc.load_string(xml.get()))
        return fail(ErrorKind::internal, label + ": the job's XML does not parse");
    for (auto disk : doc.child("domainbackup").child("disks").children("disk")) {
        std::string name = disk.attribute("name").value();
        for (auto& d : plan.disks) {
            if (d.target == name)
                d.export_name = disk.attribute("exportname").as_string(name.c_str());
        }
    }
    return {};
}

Result<ShadowJobStatus> shadow_job_status(const Domain& domain, const fs::path& socket) {
    const std::string label = domain.label() + ": shadow copy";
    ShadowJobStatus status;
    auto running = running_job_socket(domain, label);
    if (!running) return fail(running.error());
    if (running->empty() || running->lexically_normal() != socket.lexically_normal()) return status;
    auto stats = job_stats(domain.raw(), 0, label);
    if (!stats) return fail(stats.error());
    status.running = backup_running(*stats);
    status.temp_used = stats->temp_used;
    return status;
}

std::uint64_t scratch_allocated(const std::vector<fs::path>& scratch) {
    std::uint64_t used = 0;
    for (const auto& path : scratch) {
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0) used += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
    return used;
}

Result<std::optional<std::string>> shadow_holding_backup_job(const Domain& domain) {
    auto socket = running_job_socket(domain, domain.label() + ": read its backup job");
    if (!socket) return fail(socket.error());
    if (socket->empty()) return std::optional<std::string>();
    return shadow_id_of_socket(*socket);
}

Result<bool> abort_shadow_job(const Domain& domain, const fs::path& socket) {
    const std::string label = domain.label() + ": end shadow copy job";
    auto running = running_job_socket(domain, label);
    if (!running) return fail(running.error());
    if (running->empty() || running->lexically_normal() != socket.lexically_normal()) return false;
    if (virDomainAbortJob(domain.raw()) < 0) {
        // It may have ended on its own meanwhile (the VM stopped).
        auto again = running_job_socket(domain, label);
        if (again && again->empty()) return false;
        return fail(libvirt_error(label));
    }
    auto ended = wait_job_end(domain.raw(), label);
    if (!ended) return fail(ended.error());
    return true;
}

}  // namespace vmshadow::virt
