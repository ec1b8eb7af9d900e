// SPDX-License-Identifier: MIT
#pragma once
// What the shadow operations' files (shadow_create.cpp, shadow_delete.cpp, shadow_watch.cpp,
// shadow_copy.cpp) share; engine-internal.
//
// Thread-safety: plain functions.

#include <string>

#include "common/error.h"
#include "engine/shadow_ops.h"
#include "engine/shadow_record.h"
#include "virt/domain.h"

namespace vmshadow::engine {

// Undoes everything a shadow is: stops its watcher (by pid and start time), unmounts its
// files and stops their nbdfuse, aborts its job if the VM's job still serves its socket,
// removes its scratch images, socket folder and record. Goes on past failures and reports
// the first.
Status discard_shadow(const ShadowSettings& settings, const ShadowRecord& record);

// The diff area a shadow takes now: the larger of the job's temp-space statistic and the
// scratch images' allocation (an active shadow whose job cannot be read: the allocation).
std::uint64_t shadow_diff_used(const ShadowRecord& record, const virt::Domain* domain);

}  // namespace vmshadow::engine
