// SPDX-License-Identifier: MIT
#pragma once
// VmWriter: the libvirt VM writer — one vss::Writer per VM, as the Hyper-V VSS writer is
// for each of its VMs: it describes the VM, decides how it is captured, and makes its guest
// consistent around the snapshot.
//
// This module is, per event (see vss/writer.h for the contract):
//   identify          one component "vm/<name>": each backed-up disk (target, path,
//                     format, size), the domain XML, NVRAM, kernel/initrd/dtb.
//   prepare_backup    facts (state, agent, filesystems, scratch) → method (auto by
//                     DESIGN.md's rules, or the asked one, which never silently falls back);
//                     disk selection (--disk/--exclude-disk); the leftover job of a killed
//                     vmshadow is ended; the incremental chain is checked and healed: a
//                     checkpoint missing from libvirt is redefined from the XML the last
//                     restore point stored, a broken one (QEMU crashed, bitmaps "in-use")
//                     or a disk that is raw, new or replaced means a full read (deduplicated
//                     by hash) and the plan says why. The plan (backup_plan.h) goes into
//                     backup_metadata, the new checkpoint's name into backup_stamp.
//   prepare_snapshot  `image`: pause the VM (unless it already was) and save its memory
//                     image; the VM stays paused until post_snapshot.
//   freeze            `application`: agent freeze under a FreezeGuard (thaw guardian);
//                     the frozen count is compared with the filesystems the agent listed.
//                     `crash` in a group: the vCPUs are paused so every member of the group
//                     is captured at one instant.
//   thaw              the reverse; the freeze window (freeze returned → thaw returned) is
//                     measured; a guardian that thawed first breaks consistency (veto).
//   post_snapshot     `image`: resume the VM if it was running.
//   abort             thaw / resume whatever is held, remove the memory image. Idempotent,
//                     safe against a timed-out call of this writer still running.
// outcome() is what the engine records on the restore point: the consistency achieved (not
// asked), the reasons, and the timings. It is not: the backup job (pull_backup_provider.h)
// or the copy (the engine).
//
// Thread-safety: events are serialised by an internal mutex; outcome() may be called after
// the coordinator returned.

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "virt/domain.h"
#include "virt/freeze_guard.h"
#include "vmwriter/backup_plan.h"
#include "vmwriter/method_choice.h"
#include "vss/writer.h"

namespace vmshadow::vmwriter {

inline constexpr const char* kVmWriterId = "vmshadow-libvirt-vm";
inline constexpr const char* kVmLogicalPath = "vm";

struct VmWriterOptions {
    std::optional<BackupMethod> method;  // nullopt: auto
    MethodPolicy policy;
    virt::FreezeSettings freeze;
    std::string scratch_dir = "/var/tmp";
    std::string runtime_dir;                 // backup job run directories; empty: the default
    std::string repo_id;                     // names this repository's checkpoints
    std::vector<std::string> include_disks;  // --disk (empty: every backed-up disk)
    std::vector<std::string> exclude_disks;  // --exclude-disk
    bool group = false;                      // agentless members pause for the group instant
    bool force_full = false;                 // --full: ignore the chain
    std::string full_reason;  // why force_full, when not --full (a checkpoint applied)
    // From the restore point the incremental would start from: the checkpoint's stored XML
    // (redefined when libvirt lost it) and each disk's path then (a replaced disk reads full).
    std::string previous_checkpoint_xml;
    std::vector<std::pair<std::string, std::string>> previous_disk_paths;  // target, path
    std::chrono::seconds agent_timeout{5};
    // Resume a paused VM this long after pausing it at the latest, should vmshadow hang.
    std::chrono::milliseconds pause_deadline{std::chrono::minutes(5)};
};

struct VmWriterOutcome {
    std::string vm;
    BackupMethod method = BackupMethod::none;
    std::string consistency;           // achieved: application | image | crash | offline
    std::vector<std::string> reasons;  // method reasons, then anything that lowered it
    std::optional<std::chrono::milliseconds> freeze_window;  // freeze returned → thaw returned
    std::optional<std::chrono::milliseconds> quiesce;        // the agent's freeze call
    std::optional<std::chrono::milliseconds> paused;         // vCPUs paused (image, group)
    int filesystems_frozen = 0;
    int filesystems_listed = 0;
    std::vector<std::string> notes;  // leftovers ended, chain healed, …
};

class VmWriter final : public vss::Writer {
  public:
    VmWriter(std::shared_ptr<virt::Domain> domain, VmWriterOptions options);
    ~VmWriter() override;

    std::string id() const override;
    std::string name() const override;
    std::expected<vss::WriterMetadata, vss::Veto> identify(vss::EventContext& context) override;
    vss::WriterResult prepare_backup(vss::EventContext& context) override;
    vss::WriterResult prepare_snapshot(vss::EventContext& context) override;
    vss::WriterResult freeze(vss::EventContext& context) override;
    vss::WriterResult thaw(vss::EventContext& context) override;
    vss::WriterResult post_snapshot(vss::EventContext& context) override;
    vss::WriterResult abort(vss::EventContext& context) override;

    const std::shared_ptr<virt::Domain>& domain() const { return domain_; }
    vss::ComponentKey component_key() const;
    // The plan made in prepare_backup (nullopt before).
    std::optional<VmBackupPlan> plan() const;
    VmWriterOutcome outcome() const;

  private:
    Result<VmBackupPlan> make_plan(const VmFacts& facts, MethodChoice choice,
                                   const std::string& previous_stamp, const std::string& backup_id);
    void plan_chain(VmBackupPlan& plan, const std::string& previous_stamp);
    void release_locked();  // thaw / resume whatever is held; needs mu_

    std::shared_ptr<virt::Domain> domain_;
    VmWriterOptions options_;
    mutable std::mutex mu_;
    std::optional<VmBackupPlan> plan_;
    VmWriterOutcome outcome_;
    std::optional<virt::FreezeGuard> freeze_guard_;
    std::optional<virt::PauseGuard> pause_guard_;
    bool was_paused_ = false;  // the VM was paused before this backup touched it
};

// Deletes this repository's checkpoints of `domain` that are older than `keep` (the one the
// newest restore point references): each is a bitmap recording every guest write for
// nothing. Newer ones (a backup running now) and other tools' checkpoints are left alone.
// Returns the names deleted.
Result<std::vector<std::string>> retire_superseded_checkpoints(const virt::Domain& domain,
                                                               const std::string& repo_id,
                                                               const std::string& keep);

}  // namespace vmshadow::vmwriter
