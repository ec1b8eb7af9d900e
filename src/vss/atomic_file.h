// SPDX-License-Identifier: MIT
#pragma once
// write_file_atomically: replace a file so that a crash leaves the old or the new content,
// never a mix: write a temp file beside it, fsync, rename over the target, fsync the
// directory. Creates missing parent directories. Used for the writer state file.
//
// Thread-safety: safe; concurrent writers of one path leave one of the contents whole.

#include <filesystem>
#include <string_view>

#include "common/error.h"

namespace vmshadow::vss {

Status write_file_atomically(const std::filesystem::path& path, std::string_view content);

}  // namespace vmshadow::vss
