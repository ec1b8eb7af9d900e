// SPDX-License-Identifier: MIT
#pragma once
// Export copy: streams one disk's NBD export (virt::NbdExport) into a repo::DiskWriter.
//
// This module is: turning the export's ranges — `data` and `zero` for every byte of a full
// read; only the dirty bytes of an incremental — into the DiskWriter's chunk-aligned calls:
// a chunk holding any data is read and written; an all-zero chunk is a hole; a chunk an
// incremental did not touch is `unchanged` (taken from the base restore point); a chunk
// partly zeroed and partly untouched is read (a chunk is the unit of a restore point).
// Windows of the export may end inside a chunk: the chunk is finished with the next window.
// Data is read with several requests in flight, each straight into a buffer of the
// DiskWriter's pool that the write takes over (no copy); the non-data calls between data
// pieces are issued in order, as the DiskWriter requires ascending offsets.
// It is not: connecting the export or choosing full vs incremental (vm_backup.cpp).
//
// Thread-safety: one copy per DiskWriter; ChunkClassifier is a plain value.

#include <cstdint>
#include <functional>
#include <vector>

#include "common/error.h"
#include "repo/backup_session.h"
#include "virt/nbd_export.h"

namespace vmshadow::engine {

struct CopyOp {
    enum class Kind { data, zero, unchanged };
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    Kind kind = Kind::data;
    bool operator==(const CopyOp&) const = default;
};

class ChunkClassifier {
  public:
    ChunkClassifier(std::uint64_t disk_size, std::uint64_t chunk_size, bool incremental);
    // The finished chunks' operations for the window [start, end) (start = the previous
    // window's end, 0 for the first), merged into runs, in offset order.
    std::vector<CopyOp> feed(std::uint64_t start, std::uint64_t end,
                             const std::vector<virt::ExportRange>& ranges);

  private:
    std::uint64_t size_, chunk_;
    bool incremental_;
    // A chunk begun in an earlier window.
    std::uint64_t carry_chunk_ = UINT64_MAX;
    std::uint64_t carry_data_ = 0, carry_zero_ = 0;
};

struct CopyControl {
    // Checked between pieces: a failed check stops the copy with its error (scratch limit).
    std::function<Status()> check;
    // Bytes of the export walked so far: after each piece of data and each window.
    std::function<void(std::uint64_t)> progress;
    unsigned in_flight = 8;
};

// Copies the whole export into `disk` (which must have the export's size) and returns the
// bytes read over NBD. Does not call disk.finish().
Result<std::uint64_t> copy_export(virt::NbdExport& source, repo::DiskWriter& disk,
                                  const CopyControl& control);

}  // namespace vmshadow::engine
