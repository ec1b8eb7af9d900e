// SPDX-License-Identifier: MIT
#pragma once
// OverlayDisk: a restore point's disk made writable by a local copy-on-write overlay.
//
// This module is: the disk the NBD export serves. Reads come from the repository (through a
// repo::DiskReader) except for chunks written since the overlay was created, which come
// from the overlay; writes never reach the repository. It is what instant recovery runs a
// VM on, so the overlay survives the server: reopening it with the same base continues
// where it stopped. Without an overlay file the disk is read-only. It is not: the NBD
// protocol (nbdkit_plugin.cpp) nor copying the overlay anywhere.
//
// Files (never change):
//   OVERLAY      raw and sparse, the disk's size: chunk k (at k × chunk_size) holds the
//                chunk's current bytes once its bit is set. A written chunk of zeros is a
//                punched hole.
//   OVERLAY.map  header (256 bytes, little-endian): "VSOV" | version:u32=1 |
//                chunk_size:u32 | reserved:u32=0 | size:u64 | base_length:u32 |
//                base[base_length] (what the overlay was made for: "<point id>/<disk>") |
//                zero padding; then one bit per chunk (bit k%8 of byte k/8): set = the
//                chunk lives in OVERLAY.
// Writes are chunk-granular: the first write to a chunk copies the chunk from the base into
// OVERLAY, patched, syncs it and then writes the chunk's bit to OVERLAY.map. So a process
// that is killed loses no acknowledged write (the page cache holds them; instant recovery
// resumes on a new server); after a host crash, writes after the last flush may be lost (as
// NBD allows), but a bit never points at unsynced data. flush() makes every write before it
// durable. The price is one fdatasync per chunk written for the first time.
//
// Errors: io naming the file; an overlay made for another base is a conflict.
//
// Thread-safety: reads run in parallel; writes and flushes are serialised.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "repo/disk_reader.h"

namespace vmshadow::exporter {

class OverlayDisk {
  public:
    // `base` must outlive the disk. `overlay_path` empty = read-only. `base_name` identifies
    // the base ("<point id>/<disk>"); an existing overlay must have been made for it.
    static Result<std::unique_ptr<OverlayDisk>> open(repo::DiskReader& base,
                                                     const std::string& overlay_path,
                                                     const std::string& base_name);
    ~OverlayDisk();  // flushes (best effort)
    OverlayDisk(const OverlayDisk&) = delete;
    OverlayDisk& operator=(const OverlayDisk&) = delete;

    std::uint64_t size() const;
    bool writable() const;

    Status read(std::uint64_t offset, std::span<std::uint8_t> out);
    // unsupported when read-only.
    Status write(std::uint64_t offset, std::span<const std::uint8_t> data);
    Status flush();
    Result<std::vector<repo::DiskExtent>> extents(std::uint64_t offset, std::uint64_t length);
    // Chunks held by the overlay (tests, progress of instant recovery).
    std::uint64_t overlay_chunks() const;

  private:
    struct Impl;
    explicit OverlayDisk(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::exporter
