// SPDX-License-Identifier: MIT
// plan_reads: a restore reads each frame once, merges a pack's neighbouring frames into one
// read within the gap and span limits, and names a chunk the index does not know.
#include "repo/restore_plan.h"

#include <gtest/gtest.h>

namespace vmshadow::repo::test {
namespace {

Hash256 id_of(int n, int salt = 0) {
    Hash256 h;
    h.bytes[0] = static_cast<std::uint8_t>(n);
    h.bytes[1] = static_cast<std::uint8_t>(n >> 8);
    h.bytes[2] = static_cast<std::uint8_t>(salt + 1);
    return h;
}

constexpr std::uint32_t kChunk = 4096;
constexpr std::uint32_t kFrameChunks = 4;

// A pack of `frames` frames of four 4 KiB chunks each (chunk ids 100*pack + k), stored
// 10 000 bytes apart with `gap` bytes of something else between them.
PackInfo pack_of(int pack, int frames, std::uint64_t gap = 0) {
    PackInfo p;
    p.id = id_of(pack, 99);
    std::uint64_t at = 8;
    for (int f = 0; f < frames; ++f) {
        for (std::uint32_t k = 0; k < kFrameChunks; ++k) {
            BlobEntry e;
            e.id = id_of(100 * pack + f * static_cast<int>(kFrameChunks) + static_cast<int>(k));
            e.framed = true;
            e.offset = at;
            e.length = 10000;
            e.raw_length = kChunk;
            e.frame_offset = k * kChunk;
            e.frame_length = kFrameChunks * kChunk;
            p.entries.push_back(e);
        }
        at += 10000 + gap;
    }
    p.size = at;
    return p;
}

using Chunks = std::vector<std::pair<std::uint64_t, Hash256>>;

TEST(RestorePlan, APacksNeighbouringFramesAreOneReadAndEachFrameIsReadOnce) {
    Index index;
    index.add_pack(pack_of(1, 3));
    Chunks chunks;
    for (int c = 0; c < 12; ++c) chunks.emplace_back(c, id_of(100 + c));
    // The same content again further on the disk (a duplicate chunk).
    chunks.emplace_back(40, id_of(100 + 5));
    auto plan = plan_reads(index, chunks, PlanLimits{});
    ASSERT_TRUE(plan) << plan.error().message();
    ASSERT_EQ(plan->size(), 1u);
    const ReadTask& t = (*plan)[0];
    EXPECT_EQ(t.begin, 8u);
    EXPECT_EQ(t.end, 8u + 30000);
    ASSERT_EQ(t.frames.size(), 3u);
    EXPECT_EQ(t.first_chunk, 0u);
    EXPECT_EQ(t.chunk_bytes, 13u * kChunk);
    // The second frame gives chunks 4-7 and chunk 40, in disk order.
    const auto& uses = t.frames[1].uses;
    ASSERT_EQ(uses.size(), 5u);
    EXPECT_EQ(uses[0].chunk, 4u);
    EXPECT_EQ(uses[1].frame_offset, kChunk);
    EXPECT_EQ(uses[4].chunk, 40u);
    EXPECT_EQ(uses[4].id, id_of(105));
}

TEST(RestorePlan, GapsAndSpansBeyondTheLimitsSplitTheReads) {
    Index index;
    index.add_pack(pack_of(1, 4, /*gap=*/5000));
    Chunks chunks;
    for (int c = 0; c < 16; ++c) chunks.emplace_back(c, id_of(100 + c));
    // Gaps of 5000 bytes: merged when 5000 may be carried, split when not.
    auto merged = plan_reads(index, chunks, PlanLimits{1u << 20, 5000});
    ASSERT_TRUE(merged);
    EXPECT_EQ(merged->size(), 1u);
    auto split = plan_reads(index, chunks, PlanLimits{1u << 20, 4999});
    ASSERT_TRUE(split);
    EXPECT_EQ(split->size(), 4u);
    // A span of 25 000 bytes holds two frames and the gap between them.
    auto spans = plan_reads(index, chunks, PlanLimits{25000, 5000});
    ASSERT_TRUE(spans);
    ASSERT_EQ(spans->size(), 2u);
    EXPECT_EQ((*spans)[0].end - (*spans)[0].begin, 25000u);
    // A frame larger than the span is still read, alone.
    auto tiny = plan_reads(index, chunks, PlanLimits{100, 5000});
    ASSERT_TRUE(tiny);
    EXPECT_EQ(tiny->size(), 4u);
}

TEST(RestorePlan, TasksComeInDiskOrderAcrossPacks) {
    Index index;
    index.add_pack(pack_of(1, 1));
    index.add_pack(pack_of(2, 1));
    // Pack 2's frame holds the disk's first chunks, pack 1's the later ones.
    Chunks chunks;
    for (int k = 0; k < 4; ++k) chunks.emplace_back(10 + k, id_of(100 + k));
    for (int k = 0; k < 4; ++k) chunks.emplace_back(k, id_of(200 + k));
    auto plan = plan_reads(index, chunks, PlanLimits{});
    ASSERT_TRUE(plan);
    ASSERT_EQ(plan->size(), 2u);
    EXPECT_EQ((*plan)[0].first_chunk, 0u);
    EXPECT_EQ(*(*plan)[0].pack, id_of(2, 99));
    EXPECT_EQ((*plan)[1].first_chunk, 10u);
}

TEST(RestorePlan, AChunkTheIndexDoesNotKnowIsNamed) {
    Index index;
    index.add_pack(pack_of(1, 1));
    Chunks chunks{{0, id_of(100)}, {1, id_of(7, 3)}};
    auto plan = plan_reads(index, chunks, PlanLimits{});
    ASSERT_FALSE(plan);
    EXPECT_EQ(plan.error().kind(), ErrorKind::corruption);
    EXPECT_NE(plan.error().message().find(id_of(7, 3).hex()), std::string::npos);
}

}  // namespace
}  // namespace vmshadow::repo::test
