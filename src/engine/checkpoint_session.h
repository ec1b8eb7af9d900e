// SPDX-License-Identifier: MIT
#pragma once
// CheckpointSession: what every checkpoint operation of checkpoint_ops.h starts with — the
// VM found, its lock held (vm_lock.h) for the whole operation, its record loaded, and the
// record checked against the disks the VM really uses now.
//
// The check: the images the record says the VM writes to (`active`) must be the images of
// its checkpointable disks (live XML when it runs, the definition when it is off). A VM
// without checkpoints adopts its disks as they are. A VM whose disks changed outside vmshadow
// (a disk added, removed or moved) is refused with conflict: a checkpoint taken or applied
// then would silently lose a disk.
//
// Checkpointable disks: those a backup takes (virt::disk_is_backed_up); each must be a file.
// Overlay names: <disk stem>.now-<8 hex>.qcow2 beside the disk, the stem without any earlier
// ".now-<hex>" suffix (web1.qcow2 → web1.now-1a2b3c4d.qcow2).
//
// Thread-safety: one session per VM at a time (that is the lock's point).

#include <string>
#include <vector>

#include "common/error.h"
#include "engine/checkpoint_tree.h"
#include "engine/vm_lock.h"
#include "virt/connection.h"
#include "virt/domain.h"

namespace vmshadow::engine {

struct CheckpointSession {
    virt::Domain domain;
    VmLock lock;
    CheckpointTree tree;
    virt::DomainState state = virt::DomainState::shutoff;
    bool active() const {
        return state == virt::DomainState::running || state == virt::DomainState::paused;
    }
};

// `operation` names the lock's holder ("checkpoint create").
Result<CheckpointSession> open_checkpoint_session(virt::Connection& connection,
                                                  const std::string& vm,
                                                  const std::string& operation);

// The checkpointable disks of a domain XML, in its order (pure; unit-tested).
Result<std::vector<CheckpointDisk>> checkpointable_disks(const std::string& domain_xml,
                                                         const std::string& vm);

// A fresh overlay path beside `image` (not existing now).
std::string new_overlay_path(const std::string& image);

// Whether `name` may name a new checkpoint of `tree` (the rules of checkpoint_tree.h);
// invalid_argument / conflict saying why.
Status check_new_checkpoint_name(const CheckpointTree& tree, const std::string& name);

// `xml` with each disk of `disks` on its image as a qcow2 file without a backing chain in the
// XML (QEMU reads the chain from the image).
Result<std::string> domain_xml_on_images(const std::string& xml,
                                         const std::vector<CheckpointDisk>& disks);

}  // namespace vmshadow::engine
