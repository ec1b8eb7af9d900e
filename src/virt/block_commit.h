// SPDX-License-Identifier: MIT
#pragma once
// Block commit and rebase: merging one qcow2 layer of a disk's backing chain into its
// neighbour — what deleting a checkpoint does (engine/checkpoint_delete.cpp), Hyper-V's AVHDX
// merge.
//
// This module is:
//   - a running VM (libvirt block jobs, which keep the domain's XML and the dirty bitmaps
//     right): commit an image of the running chain into the image below it — the running
//     overlay (active commit: the job mirrors the guest's writes until it is ready, then
//     pivots, and the disk runs on the base) or an intermediate one (the job ends by itself);
//     each started, then waited for with a deadline and the caller's cancel token; a job that
//     fails, times out or is cancelled is aborted, so the chain is left as it was (QEMU
//     commits by copying: the base only gains data the top already shows, and the top stays in
//     the chain until the job completes);
//   - images no process has open (qemu-img): commit an image into its backing file (the top
//     is left intact: it reads the same afterwards), change an image's backing file keeping
//     its content (a safe rebase: the image pulls whatever the old backing showed and the new
//     one does not) or only its header (an unsafe rebase: when both backings read the same).
// It is not: choosing which image to merge where (the engine), nor the record of checkpoints.
//
// Errors name the VM and disk (or the image) and what failed; a deadline is ErrorKind::timeout,
// a cancel ErrorKind::cancelled. Thread-safety: one thread per domain.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "common/error.h"
#include "common/task.h"
#include "virt/domain.h"

namespace vmshadow::virt {

struct BlockJobWait {
    std::chrono::seconds deadline{6 * 3600};  // the whole job, start to end
    const CancelToken* cancel = nullptr;      // requested: the job is aborted
    // Called about once a second with the job's progress (bytes done, total).
    std::function<void(std::uint64_t, std::uint64_t)> progress;
};

// Commits `top` (a file of the disk's running chain that is not the running overlay) into
// `base` (a file below it) and waits for the job to end; the images between are dropped from
// the chain, their files left on disk (the caller's).
Status commit_intermediate(const Domain& domain, const std::string& target, const std::string& top,
                           const std::string& base, const BlockJobWait& wait);

// Commits the running overlay of `target` into `base` (a file of its chain), waits until the
// base holds everything, then pivots: the VM then writes to `base`. The overlay's file is left
// on disk (the caller's).
Status commit_active(const Domain& domain, const std::string& target, const std::string& base,
                     const BlockJobWait& wait);

// qemu-img commit: writes `image`'s data into its backing file; `image` keeps its data, so
// it reads the same afterwards (as does anything backed by it). No process may have either
// open for writing.
Status commit_image(const std::string& image, std::chrono::seconds timeout);

// qemu-img rebase (safe): `image` gets `new_backing` (qcow2; empty: none) as backing file and
// first copies whatever differs between the old and the new backing, so its content stays the
// same. `image` must not be open by any process.
Status rebase_image(const std::string& image, const std::string& new_backing,
                    std::chrono::seconds timeout);

// qemu-img rebase -u: only the header changes; for when the old and the new backing read the
// same (the old was just committed into the new).
Status rebase_image_header(const std::string& image, const std::string& new_backing);

// The backing file recorded in `image`'s header (absolute; empty: none); -U, so it also reads
// images a running QEMU has open.
Result<std::string> image_backing_file(const std::string& image);

}  // namespace vmshadow::virt
