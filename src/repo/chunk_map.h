// SPDX-License-Identifier: MIT
#pragma once
// Chunk maps: the tree of content-addressed blocks that says which chunk holds each part of
// a disk or file.
//
// This module is: reading a chunk map (random access with a per-level cache, and ordered
// iteration that skips holes in whole blocks) and the shape arithmetic both the writer and
// the reader use. It is not: storing blocks (backup_session.h does, through the same blob
// path as chunks).
//
// Shape (never change): entries at level 0 are the ids of the object's chunks
// (ceil(size / chunk_size) of them; all-zero id = hole). A block holds up to `fanout` ids of
// the level below, concatenated (32 bytes each, no header; the last block of a level may be
// shorter). Level k+1 holds the ids of level k's blocks, until a level has a single id: the
// root. `levels` is the number of block levels (>= 1). A block whose ids are all holes is
// itself a hole and is not stored, so a sparse multi-TiB disk costs nothing, and an
// unchanged region has the same block ids as in the previous point (shared metadata).
//
// Thread-safety: a ChunkMap is used by one thread at a time.

#include <cstdint>
#include <functional>
#include <vector>

#include "common/error.h"
#include "repo/crypto.h"
#include "repo/manifest.h"

namespace vmshadow::repo {

class BlobSource;

// Entry counts per level: counts[0] = chunks, counts[k] = blocks of level k-1; the last
// level has one entry (the root). levels = counts.size() - 1.
std::vector<std::uint64_t> map_level_counts(std::uint64_t size, std::uint32_t chunk_size,
                                            std::uint32_t fanout);

class ChunkMap {
  public:
    ChunkMap(const BlobSource& source, const MapRef& ref, std::uint64_t size,
             std::uint32_t chunk_size, std::uint32_t fanout);

    std::uint64_t chunk_count() const { return counts_[0]; }
    // Checks that the stored level count matches the object's size.
    Status validate() const;

    // The id of entry `index` at `level` (0 = chunk ids); hole for entries inside holes.
    Result<Hash256> entry(std::uint32_t level, std::uint64_t index);
    Result<Hash256> chunk_id(std::uint64_t chunk) { return entry(0, chunk); }

    // Calls fn(chunk_index, id) for every non-hole chunk in order; stops on the first error
    // fn returns.
    Status for_each_chunk(const std::function<Status(std::uint64_t, const Hash256&)>& fn);
    // The same for the chunks of level-0 blocks [first, first + count) only.
    Status for_each_chunk(std::uint64_t first, std::uint64_t count,
                          const std::function<Status(std::uint64_t, const Hash256&)>& fn);
    // How many level-0 blocks (of `fanout` chunk ids each) the map has; block b's id is
    // entry(1, b), a hole when all its chunks are.
    std::uint64_t leaf_count() const { return counts_.size() > 1 ? counts_[1] : 0; }
    // Calls fn(level, block_id) for every stored block (pre-order); when fn returns false
    // the block's subtree is skipped (check and gc skip blocks they have seen).
    Status for_each_block(const std::function<Result<bool>(std::uint32_t, const Hash256&)>& fn);

  private:
    struct Cached {
        Hash256 id;
        std::vector<Hash256> ids;
        bool valid = false;
    };
    Result<const std::vector<Hash256>*> block(std::uint32_t level, std::uint64_t block_index);
    Status walk(std::uint32_t level, std::uint64_t index,
                const std::function<Result<bool>(std::uint32_t, const Hash256&)>& fn);

    const BlobSource& source_;
    MapRef ref_;
    std::uint32_t fanout_;
    std::vector<std::uint64_t> counts_;
    std::vector<Cached> cache_;  // one block per level
};

// Decodes a block's bytes into ids; the length must be exactly 32 × expected.
Result<std::vector<Hash256>> decode_map_block(ByteView bytes, std::uint64_t expected);

}  // namespace vmshadow::repo
