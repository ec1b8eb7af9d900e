// SPDX-License-Identifier: MIT
#pragma once
// BackupJob: one libvirt pull-mode backup job (virDomainBackupBegin) — vmshadow's VSS
// "provider": QEMU's copy-before-write fleecing keeps the disks' point-in-time image in
// scratch qcow2 files and exports it over NBD on a private Unix socket.
//
// This module is: the job's whole life as RAII —
//   prepare()  before the freeze: private run directory + lock + job record, scratch qcow2
//              images pre-created at each disk's virtual size (REUSE_EXTERNAL), XML built;
//   start()    inside the freeze window: virDomainBackupBegin only;
//   describe() after the thaw: the effective job XML (export names, export bitmaps, scratch
//              node indexes) — begin() is start() + describe() for callers with no window;
//   finish()   the copy succeeded: virDomainAbortJob (the normal end of a pull job), check it
//              completed, keep the new checkpoint;
//   abort()    the backup failed: end the job, delete the checkpoint created with it (else the
//              next incremental misses data), remove the scratch files;
//   ~BackupJob a job neither finished nor aborted is aborted; scratch files and the run
//              directory are always removed (libvirt deletes neither with REUSE_EXTERNAL).
// Plus scratch watching and finding a job left behind by a killed vmshadow process.
// It is not: freezing (freeze_guard.h), reading the export (nbd_export.h), choosing the
// checkpoint to start from (the engine), or storing anything.
//
// Marking what is vmshadow's (names never change):
//   run directory  <runtime_dir>/<domain-uuid>.<token>/   (default runtime_dir
//   /run/vmshadow/backup)
//                  nbd.sock   the NBD server's socket; a job whose socket lies under
//                             runtime_dir is vmshadow's, any other job is foreign and untouched
//                  lock       flock()ed by the owning process for the job's life: a free lock
//                             means the owner died
//                  job.json   {"domain_uuid","checkpoint","scratch":[paths],"finished":bool}
//   scratch file   <scratch_dir>/vmshadow-scratch-<domain-uuid>.<token>-<target>.qcow2
// `token` is 8 random hex digits per job.
//
// Scratch watching — by polling, not events: poll_scratch() stats the scratch files (the
// space the diff area really takes on the host volume) and reads the job's temp-space
// statistics (VIR_DOMAIN_JOB_DISK_TEMP_USED: bytes copy-before-write copied, zero clusters
// included, so an upper bound). The copy loop calls it every ~100 ms. Events
// (VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD) would need libvirt's process-wide event loop
// registered before any connection opens — the application's business, not a provider's —
// and a block threshold is per scratch node and one-shot, while the limit (--max-scratch) is
// on the total. At 100 ms the guest can write at most rate × 100 ms past the limit: set the
// limit with that margin below the space really available.
//
// Errors name the VM, the disk and what to do. Thread-safety: one thread drives a job;
// poll_scratch() and scratch_used() may be called from another thread concurrently with
// reading the export, not with begin/finish/abort. Movable, not copyable.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "virt/domain.h"
#include "virt/handles.h"

namespace vmshadow::virt {

inline constexpr const char* kDefaultBackupRuntimeDir = "/run/vmshadow/backup";

struct BackupSpec {
    // Disk targets to back up ("vda"); every other disk of the VM gets backup='no'.
    std::vector<std::string> disks;
    // Where the scratch images go: local, fast, with room for what the guest overwrites
    // during the backup (worst case: each disk's virtual size).
    std::filesystem::path scratch_dir;
    // Back up the changes since this checkpoint (pull: the export carries a dirty bitmap).
    // Disks that cannot be incremental (not qcow2, or listed in full_disks) are read in full.
    std::optional<std::string> incremental_from;
    std::vector<std::string> full_disks;  // e.g. disks added since incremental_from
    // Created atomically with the job (same QMP transaction): a bitmap on every included
    // qcow2 disk, checkpoint='no' on every other disk. Must be a vmshadow name
    // (checkpoints.h make_checkpoint_name).
    std::optional<std::string> new_checkpoint;
    std::filesystem::path runtime_dir = kDefaultBackupRuntimeDir;
};

// One disk's export, as libvirt reports it after begin.
struct BackupExport {
    std::string target;       // "vda"
    std::string export_name;  // NBD export name (libvirt's default: the target)
    std::string bitmap;       // export bitmap ("backup-vda") for an incremental disk, else empty
    bool incremental = false;
    std::uint64_t size = 0;  // virtual size
    std::string format;      // of the VM's disk: "qcow2", "raw"
    std::filesystem::path scratch;
    int index = -1;  // scratch node index: "vda[index]" for virDomainSetBlockThreshold
    // The NBD meta context of the dirty bitmap ("qemu:dirty-bitmap:backup-vda"), or empty.
    std::string dirty_context() const;
    std::string threshold_name() const;  // "vda[5]"
};

struct ScratchStatus {
    std::uint64_t used = 0;    // bytes the scratch files take on the host (allocated blocks)
    std::uint64_t copied = 0;  // job statistics: bytes copy-before-write moved to scratch
    std::uint64_t total = 0;   // job statistics: sum of the scratch images' virtual sizes
    std::uint64_t limit = 0;   // 0: none set
    bool crossed = false;      // used >= limit (stays true once crossed)
};

class BackupJob {
  public:
    using Clock = std::chrono::steady_clock;

    // Before the freeze. Creates the run directory (locked) and the scratch images; checks
    // the disks exist and that a new checkpoint would cover at least one qcow2 disk.
    static Result<BackupJob> prepare(const Domain& domain, const BackupSpec& spec);

    // start() then describe(), for a caller with no freeze window to keep short.
    Status begin();
    // Inside the freeze window: virDomainBackupBegin and nothing else.
    // On failure the job is left prepared-but-dead: destroy it (scratch files go).
    Status start();
    // After start(), outside the window: reads the job's effective XML into exports()
    // (libvirt's export names, export bitmaps, incremental or full, scratch node indexes).
    // Until then exports() holds what was asked for. Idempotent.
    Status describe();

    // The copy succeeded: ends the job (virDomainAbortJob) and checks libvirt reports it
    // completed; the checkpoint is kept. A job that had failed (a block job failed, the VM
    // stopped) is aborted instead and the error says so.
    Status finish();
    // The backup failed: ends the job if it runs, deletes the checkpoint created with it,
    // removes scratch files. Safe to call more than once; reports the first cleanup failure.
    Status abort();

    const std::string& domain_name() const { return domain_name_; }
    const std::filesystem::path& socket() const { return socket_; }
    const std::vector<BackupExport>& exports() const { return exports_; }
    const BackupExport* find_export(std::string_view target) const;
    const std::optional<std::string>& new_checkpoint() const { return spec_.new_checkpoint; }
    // How long virDomainBackupBegin took (it sits inside the freeze window).
    std::chrono::microseconds begin_call() const { return begin_call_; }
    bool running() const { return state_ == State::running; }

    // Scratch watching (see the header comment). A limit of 0 removes it.
    void set_scratch_limit(std::uint64_t bytes) { limit_ = bytes; }
    Result<ScratchStatus> poll_scratch();
    // Host bytes the scratch files take now.
    Result<std::uint64_t> scratch_used() const;
    // Arms QEMU's write threshold on one disk's scratch node (virDomainSetBlockThreshold on
    // "vda[N]"), for an application that runs libvirt's event loop and listens for
    // VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD; one-shot. poll_scratch() does not need it.
    Status set_scratch_threshold(std::string_view target, std::uint64_t bytes);

    // The XML handed to libvirt (for logs and tests).
    const std::string& backup_xml() const { return backup_xml_; }
    const std::string& checkpoint_xml() const { return checkpoint_xml_; }

    BackupJob(BackupJob&& other) noexcept;
    BackupJob& operator=(BackupJob&&) = delete;
    BackupJob(const BackupJob&) = delete;
    BackupJob& operator=(const BackupJob&) = delete;
    ~BackupJob();

  private:
    enum class State { prepared, running, finished, aborted };
    BackupJob() = default;
    Status write_record(bool finished) const;
    Status end_job();
    Status remove_files();

    DomainHandle domain_;
    std::string domain_name_;
    std::string domain_uuid_;
    BackupSpec spec_;
    std::string token_;
    std::filesystem::path run_dir_;
    std::filesystem::path socket_;
    UniqueFd lock_;
    std::vector<BackupExport> exports_;  // before begin: what we asked for
    std::string backup_xml_;
    std::string checkpoint_xml_;
    std::chrono::microseconds begin_call_{0};
    std::uint64_t limit_ = 0;
    bool crossed_ = false;
    State state_ = State::prepared;
    bool described_ = false;
    bool moved_from_ = false;
};

struct LeftoverReport {
    bool job_ended = false;  // a dead vmshadow process's job was aborted
    std::vector<std::string> checkpoints_deleted;
    std::vector<std::filesystem::path> files_removed;  // scratch files and run directories
    std::string foreign_job;  // a running backup job that is not vmshadow's: left alone
    std::string shadow_id;    // ... and when it is a vmshadow shadow copy's, its id
};

// Finds and ends what a killed vmshadow process left on this domain: its backup job (the
// socket lies under runtime_dir and no live process holds the run directory's lock), the
// checkpoint created with a job that never finished, its scratch files and run directories.
// Scratch files in `scratch_dir` (if given) of this domain whose job is gone are removed too.
// Jobs of other tools and of live vmshadow processes are never touched; a live vmshadow
// process's job fails this with `locked` (another backup of this VM is running).
Result<LeftoverReport> end_leftover_backup(
    const Domain& domain, const std::filesystem::path& scratch_dir = {},
    const std::filesystem::path& runtime_dir = kDefaultBackupRuntimeDir);

}  // namespace vmshadow::virt
