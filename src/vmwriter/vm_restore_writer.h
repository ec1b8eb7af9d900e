// SPDX-License-Identifier: MIT
#pragma once
// VmRestoreWriter: the libvirt VM writer's restore side (VSS_RME_STOP_RESTORE_START), one per
// restored VM, as Hyper-V's writer does it.
//
// This module is, per event (vss/writer.h):
//   identify      the component of the restore point it restores (the saved key), so the
//                 RestoreCoordinator matches it with the saved BackupDocument;
//   pre_restore   a VM of the target name exists: refused without `replace`; otherwise it is
//                 stopped, and stays defined: the engine replaces its definition in one step
//                 and drops its checkpoint, snapshot and managed-save metadata, under a
//                 journal (engine/restore_journal.h), so the VM is never undefined;
//   post_restore  file_restore_status `all`: define the rewritten XML (domain_rewrite.h), then
//                 resume the memory image (an `image` point restored in place) or start the VM
//                 when asked; `none`: the old VM runs again if it ran (defined again
//                 should its definition have gone); `failed`: veto, naming what is left and how to
//                 retry.
// It is not: writing the disks (the engine) or rewriting the XML.
//
// Thread-safety: one event at a time (the coordinator's order).

#include <optional>
#include <string>

#include "virt/connection.h"
#include "vss/writer.h"

namespace vmshadow::vmwriter {

struct VmRestoreTarget {
    vss::ComponentKey component;  // the saved component (writer id, "vm", original name)
    std::string name;             // the VM to define (the original name, or --as)
    bool replace = false;
    std::string xml;                         // the rewritten domain XML to define
    std::optional<std::string> memory_file;  // resume from this saved state
    bool start = false;
};

struct VmRestoreOutcome {
    bool removed_existing = false;  // PreRestore stopped a VM of that name, to be replaced
    bool defined = false;
    bool resumed = false;  // from the memory image
    bool started = false;
    bool put_back = false;  // nothing restored: the removed VM was defined again
};

class VmRestoreWriter final : public vss::Writer {
  public:
    VmRestoreWriter(const virt::Connection& connection, VmRestoreTarget target);

    std::string id() const override { return target_.component.writer_id; }
    std::string name() const override { return "libvirt VM writer (restore " + target_.name + ")"; }
    std::expected<vss::WriterMetadata, vss::Veto> identify(vss::EventContext& context) override;
    vss::WriterResult pre_restore(vss::EventContext& context) override;
    vss::WriterResult post_restore(vss::EventContext& context) override;

    const VmRestoreOutcome& outcome() const { return outcome_; }

  private:
    const virt::Connection& connection_;
    VmRestoreTarget target_;
    VmRestoreOutcome outcome_;
    std::optional<std::string> removed_xml_;  // the replaced VM's inactive definition
    bool removed_was_running_ = false;
};

}  // namespace vmshadow::vmwriter
