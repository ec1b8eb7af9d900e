// SPDX-License-Identifier: MIT
#pragma once
// ServedDisk: one disk of one restore point, opened for serving (the NBD export).
//
// This module is: what the nbdkit plugin holds for its whole life: the repository opened
// with its password, the shared (reader) lock — so forget, prune and gc wait while it is
// served — the point resolved, and the disk as an OverlayDisk (read-only, or writable into
// a local overlay). It is not: the NBD protocol (nbdkit_plugin.cpp).
//
// Passwords come as the CLI's do: $VMSHADOW_PASSWORD, else the first line of
// `password_file`; there is no terminal to ask on.
//
// Errors: those of Repository::open, RepoLock::acquire (locked while gc runs), resolve
// (unknown point: not_found), a missing disk (not_found), OverlayDisk::open.
//
// Thread-safety: disk() is safe from many threads (see overlay.h); the rest is immutable.

#include <memory>
#include <string>

#include "common/error.h"
#include "export/overlay.h"
#include "repo/disk_reader.h"
#include "repo/lock.h"
#include "repo/repository.h"

namespace vmshadow::exporter {

struct ServeOptions {
    std::string repo;                      // repository path or "s3:…" location
    std::string point;                     // full id, unique prefix or NAME@latest
    std::string disk;                      // empty: the point's only disk
    std::string overlay;                   // empty: read-only
    std::string password_file;             // when $VMSHADOW_PASSWORD is unset
    std::string operation = "nbd export";  // recorded in the lock file
    repo::DiskReader::Options cache;
    repo::StorageOptions storage;  // an "s3:…" repository's (the plugin: from its environment)
};

// The disk `name` of `point`, or its only disk when `name` is empty.
Result<const repo::DiskRecord*> choose_disk(const repo::RestorePoint& point,
                                            const std::string& name);

// $VMSHADOW_PASSWORD, else the first line of `file`.
Result<std::string> serve_password(const std::string& file);

class ServedDisk {
  public:
    static Result<std::unique_ptr<ServedDisk>> open(const ServeOptions& options);
    ~ServedDisk();
    ServedDisk(const ServedDisk&) = delete;
    ServedDisk& operator=(const ServedDisk&) = delete;

    OverlayDisk& disk() { return *overlay_; }
    const repo::RestorePoint& point() const { return point_; }
    const repo::DiskRecord& record() const { return record_; }
    std::uint32_t chunk_size() const { return repo_->config().chunk_size; }

  private:
    ServedDisk() = default;
    // Declared in construction order; destroyed in reverse (overlay first, repository last).
    std::unique_ptr<repo::Repository> repo_;
    std::unique_ptr<repo::RepoLock> lock_;
    repo::RestorePoint point_;
    repo::DiskRecord record_;
    std::unique_ptr<repo::DiskReader> reader_;
    std::unique_ptr<OverlayDisk> overlay_;
};

}  // namespace vmshadow::exporter
