// SPDX-License-Identifier: MIT
#pragma once
// AtomicFile: the one way vmshadow replaces a record or state file (the writer state, the
// restore journal, a backup run's record, instant recovery's instant.json, a mount's
// state.json), so that a crash or a kill at any instant leaves the old content or the new one,
// on disk, never a mix: a temp file beside the target, written, fsync'ed, renamed over the
// target, and the directory fsync'ed.
//
// This module is: AtomicFile (stream into the temp, then commit(); destroying it uncommitted
// removes the temp and leaves the target as it was) and write_file_atomically (the one-shot
// form). Missing parent directories are created.
// This module is not: the repository's pack/index/commit writing (repo/env.h: files created
// once with O_EXCL, fdatasync'ed, then renamed by the repository's own commit protocol), or
// lock files written in place under flock (a rename would move the lock off its inode).
//
// Thread-safety: one AtomicFile per thread; concurrent writers of one path each use their own
// temp, and the target ends as one of the contents whole.

#include <sys/types.h>

#include <filesystem>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace vmshadow {

class AtomicFile {
  public:
    // Creates the temp file ("." + name + ".XXXXXX" beside `target`), with `mode`.
    static Result<AtomicFile> create(std::filesystem::path target, mode_t mode = 0644);

    AtomicFile(AtomicFile&& other) noexcept;
    AtomicFile& operator=(AtomicFile&& other) noexcept;
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile();  // discards the temp file unless commit() succeeded

    // Appends to the temp file.
    Status write(std::string_view data);
    // fsync, rename over the target, fsync the directory. After a failure the target is the
    // old one and the temp is gone.
    Status commit();

    const std::filesystem::path& target() const { return target_; }

  private:
    AtomicFile(std::filesystem::path target, std::filesystem::path temp, UniqueFd fd);
    void discard();

    std::filesystem::path target_;
    std::filesystem::path temp_;  // empty once committed or discarded
    UniqueFd fd_;
};

// Replaces `path` with `content` through an AtomicFile.
Status write_file_atomically(const std::filesystem::path& path, std::string_view content,
                             mode_t mode = 0644);

}  // namespace vmshadow
