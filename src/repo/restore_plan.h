// SPDX-License-Identifier: MIT
#pragma once
// RestorePlan: the data chunks of a stretch of a disk grouped by where they are stored, so a
// restore reads each pack's frames in a few large reads (one ranged GET each on object
// storage) instead of one read per frame in disk order.
//
// This module is: pure planning over the index — which frames of which pack hold the
// chunks, which byte ranges of the pack to read (neighbouring frames merged, across gaps of
// at most `max_gap` bytes, up to `max_span` bytes a read), and which chunks each frame
// gives. It is not: reading, decoding or verifying (restore.cpp does that, verifying every
// chunk against its id before it is written).
//
// Every frame of a plan is read once however many chunks (or duplicate chunks: the same
// content at several offsets) it serves. Tasks come in the order of the first chunk they
// serve, so a restore still moves through the disk roughly front to back.

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "common/error.h"
#include "repo/index.h"
#include "repo/pack.h"

namespace vmshadow::repo {

// One chunk of the disk and where it lies in its frame's plaintext.
struct ChunkUse {
    std::uint64_t chunk = 0;  // index of the chunk in the disk
    Hash256 id;
    std::uint32_t frame_offset = 0;  // 0 for a blob stored alone
    std::uint32_t length = 0;        // the blob's plaintext bytes
};

// One stored frame (or a blob stored alone) and the chunks it gives, sorted by chunk.
struct FrameRead {
    BlobEntry entry;  // one of the frame's entries: offset, length, flags, frame_length
    std::vector<ChunkUse> uses;
};

// One read of `pack`, [begin, end), and the frames inside it in pack order.
struct ReadTask {
    const Hash256* pack = nullptr;  // points into the index
    std::uint64_t begin = 0, end = 0;
    std::vector<FrameRead> frames;
    std::uint64_t first_chunk = 0;  // the lowest chunk it serves (task order)
    std::uint64_t chunk_bytes = 0;  // plaintext bytes it writes (progress)
};

struct PlanLimits {
    std::uint64_t max_span = 8u << 20;  // bytes one read may span (a single frame may exceed it)
    std::uint64_t max_gap = 0;          // unneeded bytes a read may carry between two frames
};

// Plans the reads for `chunks` ((chunk index, id) pairs, any order). A chunk the index does
// not know is a corruption error naming it.
Result<std::vector<ReadTask>> plan_reads(const Index& index,
                                         std::span<const std::pair<std::uint64_t, Hash256>> chunks,
                                         const PlanLimits& limits);

}  // namespace vmshadow::repo
