// SPDX-License-Identifier: MIT
#pragma once
// write_file_durably: the crash-recovery records of daemons (instant recovery's instant.json,
// the mount's state.json) replaced so that a crash or a kill at any instant leaves the old or
// the new content, on disk, never a mix: a temp file beside it, fsync, rename over the target,
// fsync the directory. (vss/atomic_file.h does the same for the writer state; common cannot
// use vss.)
//
// Thread-safety: one writer per path at a time.

#include <string>
#include <string_view>

#include "common/error.h"

namespace vmshadow {

Status write_file_durably(const std::string& path, std::string_view content);

}  // namespace vmshadow
