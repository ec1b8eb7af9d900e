// SPDX-License-Identifier: MIT
#include "virt/backup_job.h"

#include <libvirt/virterror.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include "common/atomic_file.h"
#include "common/os_error.h"
#include "virt/backup_job_detail.h"
#include "virt/checkpoints.h"
#include "virt/libvirt_error.h"
#include "virt/qemu_img.h"

namespace vmshadow::virt {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// One disk of the job: its size, format, scratch file (`scratch_stem`-TARGET.qcow2) and
// whether it is read incrementally.
Result<BackupExport> plan_export(const Domain& domain, const DomainDescription& described,
                                 const BackupSpec& spec, const std::string& target,
                                 const std::string& scratch_stem, const std::string& label) {
    if (std::count(spec.disks.begin(), spec.disks.end(), target) > 1) {
        return fail(ErrorKind::invalid_argument, label + ": disk " + target + " listed twice");
    }
    auto d = std::find_if(described.disks.begin(), described.disks.end(),
                          [&](const DiskSpec& s) { return s.target == target; });
    if (d == described.disks.end()) {
        return fail(ErrorKind::not_found, label + ": the VM has no disk '" + target + "'");
    }
    if (!disk_is_backed_up(*d)) {
        return fail(ErrorKind::invalid_argument,
                    label + ": disk " + target + " cannot be backed up (" + d->device + ")");
    }
    auto info = domain.block_info(target);
    if (!info) return fail(info.error().with_context(label));
    BackupExport e;
    e.target = target;
    e.export_name = target;
    e.size = info->capacity;
    e.format = d->format;
    e.scratch = spec.scratch_dir / (scratch_stem + "-" + target + ".qcow2");
    bool full =
        !spec.incremental_from || d->format != "qcow2" ||
        std::find(spec.full_disks.begin(), spec.full_disks.end(), target) != spec.full_disks.end();
    e.incremental = !full;
    return e;
}

}  // namespace

std::string BackupExport::dirty_context() const {
    return bitmap.empty() ? std::string() : "qemu:dirty-bitmap:" + bitmap;
}

std::string BackupExport::threshold_name() const {
    return target + "[" + std::to_string(index) + "]";
}

Result<BackupJob> BackupJob::prepare(const Domain& domain, const BackupSpec& spec) {
    std::string label = domain.label() + ": prepare backup";
    if (spec.disks.empty()) return fail(ErrorKind::invalid_argument, label + ": no disks given");
    if (!spec.scratch_dir.is_absolute() || !spec.runtime_dir.is_absolute()) {
        return fail(ErrorKind::invalid_argument,
                    label + ": the scratch and runtime directories must be absolute paths");
    }
    if (spec.new_checkpoint && !checkpoint_repo(*spec.new_checkpoint)) {
        return fail(ErrorKind::invalid_argument,
                    label + ": '" + *spec.new_checkpoint + "' is not a vmshadow checkpoint name");
    }
    auto described = domain.describe();
    if (!described) return fail(described.error().with_context(label));

    BackupJob job;
    if (virDomainRef(domain.raw()) < 0) return fail(libvirt_error(label));
    job.domain_.reset(domain.raw());
    job.domain_name_ = domain.name();
    job.domain_uuid_ = domain.uuid();
    job.spec_ = spec;
    job.token_ = random_token();

    // Which disks, their sizes and formats.
    for (const auto& target : spec.disks) {
        auto e =
            plan_export(domain, *described, spec, target,
                        std::string(kScratchPrefix) + job.domain_uuid_ + "." + job.token_, label);
        if (!e) return fail(e.error());
        job.exports_.push_back(std::move(*e));
    }
    if (spec.new_checkpoint &&
        std::none_of(job.exports_.begin(), job.exports_.end(),
                     [](const BackupExport& e) { return e.format == "qcow2"; })) {
        return fail(ErrorKind::unsupported,
                    label +
                        ": a checkpoint needs at least one qcow2 disk (raw disks have no "
                        "persistent dirty bitmaps); back up without a checkpoint");
    }

    // The run directory: locked for the job's life, socket and record inside.
    std::error_code ec;
    fs::create_directories(spec.runtime_dir, ec);
    if (ec) {
        return fail(os_error(label + ": create " + spec.runtime_dir.string(), ec));
    }
    fs::path run_dir = spec.runtime_dir / (job.domain_uuid_ + "." + job.token_);
    if (::mkdir(run_dir.c_str(), 0700) != 0) {
        return fail(os_error(label + ": create " + run_dir.string(), errno));
    }
    job.run_dir_ = run_dir;
    job.socket_ = run_dir / kSocketName;
    if (job.socket_.string().size() >= sizeof(sockaddr_un{}.sun_path)) {
        return fail(ErrorKind::invalid_argument,
                    label + ": socket path " + job.socket_.string() + " is too long");
    }
    auto lock = try_lock(run_dir);
    if (!lock) return fail(lock.error().with_context(label));
    if (!*lock) return fail(ErrorKind::locked, label + ": " + run_dir.string() + " is locked");
    job.lock_ = std::move(**lock);
    if (auto s = job.write_record(false); !s) return fail(s.error().with_context(label));

    fs::create_directories(spec.scratch_dir, ec);
    for (const auto& e : job.exports_) {
        if (auto s = create_qcow2(e.scratch.string(), e.size); !s) {
            return fail(s.error().with_context(label + ", disk " + e.target));
        }
    }

    // The XML libvirt gets.
    auto xml = build_job_xml(spec, *described, job.exports_, job.socket_);
    job.backup_xml_ = std::move(xml.backup);
    if (spec.new_checkpoint) job.checkpoint_xml_ = std::move(xml.checkpoint);
    return job;
}

Status BackupJob::write_record(bool finished) const {
    json record = {{"domain_uuid", domain_uuid_},
                   {"domain", domain_name_},
                   {"checkpoint", spec_.new_checkpoint.value_or("")},
                   {"finished", finished}};
    record["scratch"] = json::array();
    for (const auto& e : exports_) record["scratch"].push_back(e.scratch.string());
    return write_file_atomically(run_dir_ / kRecordName, record.dump() + "\n");
}

Status BackupJob::begin() {
    if (auto st = start(); !st) return st;
    return describe();
}

Status BackupJob::start() {
    std::string label = "vm '" + domain_name_ + "': backup begin";
    if (state_ != State::prepared) {
        return fail(ErrorKind::internal, label + ": the job was begun already");
    }
    auto start = Clock::now();
    int rc = virDomainBackupBegin(domain_.get(), backup_xml_.c_str(),
                                  checkpoint_xml_.empty() ? nullptr : checkpoint_xml_.c_str(),
                                  VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL);
    begin_call_ = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    if (rc < 0) {
        virErrorPtr err = virGetLastError();
        int code = err ? err->code : 0;
        Error e = libvirt_error(label);
        state_ = State::aborted;
        std::string hint;
        if (code == VIR_ERR_CHECKPOINT_INCONSISTENT || code == VIR_ERR_NO_DOMAIN_CHECKPOINT) {
            hint = " (checkpoint '" + spec_.incremental_from.value_or("") +
                   "' cannot be used: take a full backup)";
        } else if (code == VIR_ERR_OPERATION_INVALID) {
            hint =
                " (is another backup or block job running on this VM? `vmshadow` ends its own "
                "leftovers; check `virsh domjobinfo`)";
        }
        ErrorKind kind = e.kind();
        const std::string dir = spec_.scratch_dir.string();
        if (hint.empty() && !dir.empty() && e.message().find(dir) != std::string::npos) {
            // Our scratch file exists on the host, so QEMU looks at another filesystem there:
            // the user's configuration, not a bug.
            kind = ErrorKind::invalid_argument;
            hint = " (QEMU cannot open its scratch file in " + dir +
                   ": QEMU runs in its own mount namespace and sees only the mounts that "
                   "existed when the VM started, and it must be allowed to write there; choose "
                   "another --scratch-dir, or restart the VM after mounting it)";
        }
        // libvirt creates the checkpoint in the same transaction; make sure none survived.
        if (spec_.new_checkpoint) {
            (void)delete_own_checkpoint(borrow(domain_.get()), *spec_.new_checkpoint);
        }
        return fail(kind, e.message() + hint);
    }
    state_ = State::running;
    return {};
}

Status BackupJob::describe() {
    std::string label = "vm '" + domain_name_ + "': backup job";
    if (state_ != State::running) {
        return fail(ErrorKind::internal, label + ": describe before begin");
    }
    if (described_) return {};
    CString xml(virDomainBackupGetXMLDesc(domain_.get(), 0));
    if (!xml) return fail(libvirt_error(label + ": read the job's XML"));
    pugi::xml_document doc;
    if (!doc.load_string(xml.get())) {
        return fail(ErrorKind::internal, label + ": the job's XML does not parse");
    }
    for (auto disk : doc.child("domainbackup").child("disks").children("disk")) {
        std::string name = disk.attribute("name").value();
        auto e = std::find_if(exports_.begin(), exports_.end(),
                              [&](const BackupExport& x) { return x.target == name; });
        if (e == exports_.end()) continue;
        if (std::string_view(disk.attribute("backup").value()) == "no") {
            return fail(ErrorKind::internal, label + ": libvirt left out disk " + name);
        }
        e->export_name = disk.attribute("exportname").as_string(name.c_str());
        e->bitmap = disk.attribute("exportbitmap").value();
        e->index = disk.attribute("index").as_int(-1);
        e->incremental = std::string_view(disk.attribute("backupmode").value()) == "incremental";
        if (e->incremental && e->bitmap.empty()) {
            return fail(ErrorKind::internal,
                        label + ": incremental disk " + name + " has no export bitmap");
        }
    }
    described_ = true;
    return {};
}

const BackupExport* BackupJob::find_export(std::string_view target) const {
    for (const auto& e : exports_) {
        if (e.target == target) return &e;
    }
    return nullptr;
}

Status BackupJob::end_job() {
    std::string label = "vm '" + domain_name_ + "': end backup job";
    auto current = job_stats(domain_.get(), 0, label);
    if (!current) return fail(current.error());
    if (!backup_running(*current)) {
        auto done = job_stats(domain_.get(), VIR_DOMAIN_JOB_STATS_COMPLETED, label);
        std::string why = done && !done->errmsg.empty() ? ": " + done->errmsg : "";
        return fail(ErrorKind::conflict,
                    label + ": the job ended before the copy finished (did the VM stop?)" + why);
    }
    if (virDomainAbortJob(domain_.get()) < 0) return fail(libvirt_error(label));
    auto done = wait_job_end(domain_.get(), label);
    if (!done) return fail(done.error());
    if (done->type != VIR_DOMAIN_JOB_COMPLETED) {
        return fail(ErrorKind::io, label + ": libvirt reports the job " +
                                       (done->type == VIR_DOMAIN_JOB_CANCELLED ? "cancelled"
                                        : done->type == VIR_DOMAIN_JOB_FAILED
                                            ? "failed"
                                            : "in state " + std::to_string(done->type)) +
                                       (done->errmsg.empty() ? "" : ": " + done->errmsg));
    }
    return {};
}

Status BackupJob::finish() {
    if (state_ != State::running) {
        return fail(ErrorKind::internal,
                    "vm '" + domain_name_ + "': finish backup: the job is not running");
    }
    if (auto ended = end_job(); !ended) {
        state_ = State::running;
        (void)abort();
        return ended;
    }
    state_ = State::finished;
    (void)write_record(true);
    return remove_files();
}

Status BackupJob::abort() {
    Status result;
    if (state_ == State::running) {
        auto current = job_stats(domain_.get(), 0, "vm '" + domain_name_ + "'");
        if (current && backup_running(*current)) {
            std::string what = "vm '" + domain_name_ + "': abort backup job";
            if (virDomainAbortJob(domain_.get()) < 0) {
                result = fail(libvirt_error(what));
            } else if (auto ended = wait_job_end(domain_.get(), what); !ended) {
                result = fail(ended.error());
            }
        }
    }
    bool had_begun = state_ == State::running;
    if (state_ != State::finished) state_ = State::aborted;
    if (had_begun && spec_.new_checkpoint) {
        auto deleted = delete_own_checkpoint(borrow(domain_.get()), *spec_.new_checkpoint);
        if (!deleted && result) result = fail(deleted.error().with_context("failed backup"));
    }
    auto removed = remove_files();
    if (!removed && result) result = removed;
    return result;
}

Status BackupJob::remove_files() {
    Status result;
    for (const auto& e : exports_) {
        std::error_code ec;
        fs::remove(e.scratch, ec);
        if (ec && result) {
            result = fail(os_error("remove scratch image " + e.scratch.string(), ec));
        }
    }
    if (!run_dir_.empty()) {
        std::error_code ec;
        fs::remove_all(run_dir_, ec);
        if (ec && result) {
            result = fail(os_error("remove " + run_dir_.string(), ec));
        }
        run_dir_.clear();
    }
    lock_.reset();
    return result;
}

BackupJob::BackupJob(BackupJob&& other) noexcept
    : domain_(std::move(other.domain_)),
      domain_name_(std::move(other.domain_name_)),
      domain_uuid_(std::move(other.domain_uuid_)),
      spec_(std::move(other.spec_)),
      token_(std::move(other.token_)),
      run_dir_(std::exchange(other.run_dir_, {})),
      socket_(std::move(other.socket_)),
      lock_(std::move(other.lock_)),
      exports_(std::exchange(other.exports_, {})),
      backup_xml_(std::move(other.backup_xml_)),
      checkpoint_xml_(std::move(other.checkpoint_xml_)),
      begin_call_(other.begin_call_),
      limit_(other.limit_),
      crossed_(other.crossed_),
      state_(other.state_),
      described_(other.described_) {
    other.moved_from_ = true;
}

BackupJob::~BackupJob() {
    if (moved_from_) return;
    if (state_ == State::running) {
        (void)abort();
    } else {
        (void)remove_files();
    }
}

}  // namespace vmshadow::virt
