// SPDX-License-Identifier: MIT
#include "virt/backup_job.h"

#include <fcntl.h>
#include <libvirt/virterror.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "common/atomic_file.h"
#include "common/os_error.h"
#include "virt/checkpoints.h"
#include "virt/libvirt_error.h"
#include "virt/qemu_img.h"

namespace vmshadow::virt {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kSocketName = "nbd.sock";
constexpr const char* kLockName = "lock";
constexpr const char* kRecordName = "job.json";
constexpr const char* kScratchPrefix = "vmshadow-scratch-";

std::string random_token() {
    std::random_device rd;
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(rd()));
    return buf;
}

std::string xml_text(const pugi::xml_document& doc) {
    std::ostringstream out;
    doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
    return out.str();
}

// Opens (creating) dir/lock and takes its exclusive flock without waiting. nullopt (with
// errno EWOULDBLOCK) when another process holds it.
Result<std::optional<UniqueFd>> try_lock(const fs::path& dir) {
    UniqueFd fd(::open((dir / kLockName).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return fail(os_error("open " + (dir / kLockName).string(), errno));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) return std::optional<UniqueFd>();
        return fail(os_error("lock " + (dir / kLockName).string(), errno));
    }
    return std::optional<UniqueFd>(std::move(fd));
}

struct JobStats {
    int type = VIR_DOMAIN_JOB_NONE;
    int operation = 0;
    std::uint64_t temp_used = 0;
    std::uint64_t temp_total = 0;
    std::string errmsg;
};

Result<JobStats> job_stats(virDomainPtr dom, unsigned flags, const std::string& what) {
    int type = 0;
    virTypedParameterPtr params = nullptr;
    int n = 0;
    if (virDomainGetJobStats(dom, &type, &params, &n, flags) < 0) {
        return fail(libvirt_error(what + ": job statistics"));
    }
    JobStats stats;
    stats.type = type;
    unsigned long long ull = 0;
    if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DISK_TEMP_USED, &ull) == 1) {
        stats.temp_used = ull;
    }
    if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DISK_TEMP_TOTAL, &ull) == 1) {
        stats.temp_total = ull;
    }
    int op = 0;
    if (virTypedParamsGetInt(params, n, VIR_DOMAIN_JOB_OPERATION, &op) == 1) stats.operation = op;
    const char* err = nullptr;
    if (virTypedParamsGetString(params, n, VIR_DOMAIN_JOB_ERRMSG, &err) == 1 && err) {
        stats.errmsg = err;
    }
    virTypedParamsFree(params, n);
    return stats;
}

// virDomainAbortJob returns before libvirt has torn the job down: wait for the completed
// job's statistics (bounded), which say how it ended.
Result<JobStats> wait_job_end(virDomainPtr dom, const std::string& what) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (true) {
        auto current = job_stats(dom, 0, what);
        if (!current) return fail(current.error());
        if (current->type == VIR_DOMAIN_JOB_NONE) {
            auto done = job_stats(dom, VIR_DOMAIN_JOB_STATS_COMPLETED, what);
            if (!done || done->type != VIR_DOMAIN_JOB_NONE) return done;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            return fail(ErrorKind::timeout, what + ": the job did not end within 60 s of abort");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

bool backup_running(const JobStats& s) {
    return s.type != VIR_DOMAIN_JOB_NONE && s.operation == VIR_DOMAIN_JOB_OPERATION_BACKUP;
}

bool path_under(const fs::path& path, const fs::path& dir) {
    auto p = path.lexically_normal().string();
    auto d = dir.lexically_normal().string();
    if (!d.empty() && d.back() != '/') d += '/';
    return p.starts_with(d);
}

// A Domain holding its own reference to `dom`.
Domain borrow(virDomainPtr dom) {
    virDomainRef(dom);
    return Domain(DomainHandle(dom));
}

void remove_quietly(const fs::path& path, std::vector<fs::path>* removed = nullptr) {
    std::error_code ec;
    if (fs::remove_all(path, ec) > 0 && removed) removed->push_back(path);
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
        if (std::count(spec.disks.begin(), spec.disks.end(), target) > 1) {
            return fail(ErrorKind::invalid_argument, label + ": disk " + target + " listed twice");
        }
        auto d = std::find_if(described->disks.begin(), described->disks.end(),
                              [&](const DiskSpec& s) { return s.target == target; });
        if (d == described->disks.end()) {
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
        e.scratch = spec.scratch_dir / (std::string(kScratchPrefix) + job.domain_uuid_ + "." +
                                        job.token_ + "-" + target + ".qcow2");
        bool full = !spec.incremental_from || d->format != "qcow2" ||
                    std::find(spec.full_disks.begin(), spec.full_disks.end(), target) !=
                        spec.full_disks.end();
        e.incremental = !full;
        job.exports_.push_back(std::move(e));
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
    pugi::xml_document backup;
    auto root = backup.append_child("domainbackup");
    root.append_attribute("mode") = "pull";
    if (spec.incremental_from) {
        root.append_child("incremental").text() = spec.incremental_from->c_str();
    }
    auto server = root.append_child("server");
    server.append_attribute("transport") = "unix";
    server.append_attribute("socket") = job.socket_.c_str();
    auto disks = root.append_child("disks");
    pugi::xml_document checkpoint;
    auto croot = checkpoint.append_child("domaincheckpoint");
    if (spec.new_checkpoint) {
        croot.append_child("name").text() = spec.new_checkpoint->c_str();
        croot.append_child("description").text() = "vmshadow backup";
    }
    auto cdisks = croot.append_child("disks");
    for (const auto& d : described->disks) {
        auto e = std::find_if(job.exports_.begin(), job.exports_.end(),
                              [&](const BackupExport& x) { return x.target == d.target; });
        auto disk = disks.append_child("disk");
        disk.append_attribute("name") = d.target.c_str();
        auto cdisk = cdisks.append_child("disk");
        cdisk.append_attribute("name") = d.target.c_str();
        bool bitmap = e != job.exports_.end() && d.format == "qcow2";
        cdisk.append_attribute("checkpoint") = bitmap ? "bitmap" : "no";
        if (e == job.exports_.end()) {
            disk.append_attribute("backup") = "no";
            continue;
        }
        disk.append_attribute("backup") = "yes";
        disk.append_attribute("type") = "file";
        if (spec.incremental_from && !e->incremental) disk.append_attribute("backupmode") = "full";
        disk.append_child("scratch").append_attribute("file") = e->scratch.c_str();
    }
    job.backup_xml_ = xml_text(backup);
    if (spec.new_checkpoint) job.checkpoint_xml_ = xml_text(checkpoint);
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

Result<std::uint64_t> BackupJob::scratch_used() const {
    std::uint64_t used = 0;
    for (const auto& e : exports_) {
        struct stat st {};
        if (::stat(e.scratch.c_str(), &st) != 0) {
            return fail(
                os_error("vm '" + domain_name_ + "': scratch image " + e.scratch.string(), errno));
        }
        used += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
    return used;
}

Status BackupJob::set_scratch_threshold(std::string_view target, std::uint64_t bytes) {
    const BackupExport* e = find_export(target);
    std::string label =
        "vm '" + domain_name_ + "': scratch threshold of disk " + std::string(target);
    if (!e || state_ != State::running || e->index < 0) {
        return fail(ErrorKind::invalid_argument, label + ": no running export of that disk");
    }
    if (virDomainSetBlockThreshold(domain_.get(), e->threshold_name().c_str(), bytes, 0) < 0) {
        return fail(libvirt_error(label));
    }
    return {};
}

Result<ScratchStatus> BackupJob::poll_scratch() {
    ScratchStatus status;
    auto used = scratch_used();
    if (!used) return fail(used.error());
    status.used = *used;
    if (state_ == State::running) {
        auto stats = job_stats(domain_.get(), 0, "vm '" + domain_name_ + "'");
        if (!stats) return fail(stats.error());
        status.copied = stats->temp_used;
        status.total = stats->temp_total;
    }
    status.limit = limit_;
    if (limit_ > 0 && status.used >= limit_) crossed_ = true;
    status.crossed = crossed_;
    return status;
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

Result<LeftoverReport> end_leftover_backup(const Domain& domain, const fs::path& scratch_dir,
                                           const fs::path& runtime_dir) {
    std::string label = domain.label() + ": leftover backup";
    LeftoverReport report;
    const std::string uuid = domain.uuid();
    // Locks of dead jobs' directories, held while we clean them (flock is per open file: a
    // second open of the same lock in this process would look like a live owner).
    std::vector<std::pair<fs::path, UniqueFd>> held;

    // 1. A running backup job: ours (socket under runtime_dir) or foreign. A VM that is not
    // running has no job.
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
        }
    }

    // 2. Run directories of this domain whose owner is gone.
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

    // 3. Scratch files of this domain whose job directory is gone (e.g. /run was wiped).
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
    return report;
}

Result<VmHealth> vm_health(const Domain& domain) {
    int state = 0;
    int reason = 0;
    if (virDomainGetState(domain.raw(), &state, &reason, 0) < 0)
        return fail(libvirt_error(domain.label() + ": read state"));
    auto named = domain.state();
    if (!named) return fail(named.error());
    VmHealth health;
    health.state = *named;
    health.io_error_paused = state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_IOERROR;
    if (!health.io_error_paused) return health;
    virDomainDiskError errors[16];
    int n = virDomainGetDiskErrors(domain.raw(), errors, 16, 0);
    for (int i = 0; i < n; ++i) {
        if (!health.io_errors.empty()) health.io_errors += ", ";
        const char* what = errors[i].error == VIR_DOMAIN_DISK_ERROR_NO_SPACE ? "no space"
                           : errors[i].error == VIR_DOMAIN_DISK_ERROR_UNSPEC ? "I/O error"
                                                                             : "error";
        health.io_errors += std::string(errors[i].disk ? errors[i].disk : "?") + ": " + what;
        free(errors[i].disk);
    }
    return health;
}

Status resume_after_io_error(const Domain& domain) {
    if (virDomainResume(domain.raw()) < 0)
        return fail(libvirt_error(domain.label() + ": resume after the I/O error"));
    // A write that fails again (the VM's own storage is full) pauses it again within moments.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    auto health = vm_health(domain);
    if (!health) return fail(health.error());
    if (health->io_error_paused) {
        return fail(ErrorKind::io, domain.label() +
                                       ": QEMU paused the VM again on a write error after it was "
                                       "resumed (" +
                                       (health->io_errors.empty() ? "see `virsh domblkerror`"
                                                                  : health->io_errors) +
                                       "): free space on the VM's own storage, then `virsh "
                                       "resume " +
                                       domain.name() + "`");
    }
    return {};
}

}  // namespace vmshadow::virt
