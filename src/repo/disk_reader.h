// SPDX-License-Identifier: MIT
#pragma once
// DiskReader: random access to one disk (or VM file) of a restore point.
//
// This module is: reading any byte range of a stored object, and telling which ranges are
// holes, for servers that read what a client asks (the NBD export, src/export/). A read
// fetches only the chunks its range touches, each verified by read_blob (id and, when
// encrypted, the GCM tag). Chunk-map blocks it walked are kept in an LRU cache (scattered
// reads do not re-read the tree) and so are the chunks it read last (a client that reads a
// chunk in small pieces fetches and decompresses it once). Holes read as zeros and cost
// nothing. It is not: streaming a whole object out (restore.h reads ahead in parallel and is
// faster for that), nor writing.
//
// Errors: a missing or damaged chunk or map block is a corruption error naming it; a range
// past the end is invalid_argument. Nothing unverified is ever returned.
//
// Thread-safety: every method may be called from several threads at once; the caches are
// locked, blob reads run outside the lock. The BlobSource must outlive the reader.

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/error.h"
#include "repo/manifest.h"
#include "repo/repository.h"

namespace vmshadow::repo {

struct DiskExtent {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    bool hole = false;  // reads as zeros and is stored as nothing

    friend bool operator==(const DiskExtent&, const DiskExtent&) = default;
};

class DiskReader {
  public:
    struct Options {
        std::size_t cached_chunks = 64;      // decoded chunks kept (64 KiB each by default)
        std::size_t cached_map_blocks = 64;  // chunk-map blocks kept (a level-0 block = 32 MiB)
    };

    // Checks the map's shape against the object's size.
    static Result<std::unique_ptr<DiskReader>> open(const BlobSource& source, const MapRef& map,
                                                    std::uint64_t size, std::uint32_t chunk_size,
                                                    std::uint32_t fanout, Options options);
    static Result<std::unique_ptr<DiskReader>> open(const Repository& repo, const DiskRecord& disk,
                                                    Options options);
    ~DiskReader();
    DiskReader(const DiskReader&) = delete;
    DiskReader& operator=(const DiskReader&) = delete;

    std::uint64_t size() const;
    std::uint32_t chunk_size() const;

    // Fills `out` with the bytes at [offset, offset + out.size()).
    Status read(std::uint64_t offset, std::span<std::uint8_t> out);
    // Data and hole ranges covering [offset, offset + length), merged, in order; a range is
    // reported at chunk granularity (clamped to the request).
    Result<std::vector<DiskExtent>> extents(std::uint64_t offset, std::uint64_t length);
    // Whether chunk `index` is a hole.
    Result<bool> is_hole(std::uint64_t chunk);

  private:
    struct Impl;
    explicit DiskReader(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::repo
