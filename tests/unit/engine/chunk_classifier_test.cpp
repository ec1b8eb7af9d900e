// SPDX-License-Identifier: MIT
#include <gtest/gtest.h>

#include "engine/export_copy.h"

namespace vmshadow::engine {
namespace {

using Kind = CopyOp::Kind;
using R = virt::ExportRange;
constexpr std::uint64_t K = 64 * 1024;

TEST(ChunkClassifier, FullReadTurnsDataAndZeroRangesIntoChunkRuns) {
    ChunkClassifier c(8 * K, K, false);
    auto ops = c.feed(
        0, 8 * K,
        {{0, 2 * K, R::Kind::data}, {2 * K, 4 * K, R::Kind::zero}, {6 * K, 2 * K, R::Kind::data}});
    EXPECT_EQ(ops,
              (std::vector<CopyOp>{
                  {0, 2 * K, Kind::data}, {2 * K, 4 * K, Kind::zero}, {6 * K, 2 * K, Kind::data}}));
}

TEST(ChunkClassifier, AChunkWithAnyDataIsReadEvenWhenMostlyZero) {
    ChunkClassifier c(2 * K, K, false);
    auto ops = c.feed(0, 2 * K, {{0, 4096, R::Kind::data}, {4096, 2 * K - 4096, R::Kind::zero}});
    EXPECT_EQ(ops, (std::vector<CopyOp>{{0, K, Kind::data}, {K, K, Kind::zero}}));
}

TEST(ChunkClassifier, IncrementalGapsAreUnchangedAndPartlyZeroedChunksAreRead) {
    ChunkClassifier c(6 * K, K, true);
    auto ops = c.feed(
        0, 6 * K,
        {{K, K, R::Kind::data}, {3 * K, K, R::Kind::zero}, {4 * K + 4096, 4096, R::Kind::zero}});
    EXPECT_EQ(ops, (std::vector<CopyOp>{{0, K, Kind::unchanged},
                                        {K, K, Kind::data},
                                        {2 * K, K, Kind::unchanged},
                                        {3 * K, K, Kind::zero},
                                        {4 * K, K, Kind::data},
                                        {5 * K, K, Kind::unchanged}}));
}

TEST(ChunkClassifier, AChunkSplitAcrossWindowsIsDecidedByBoth) {
    // Chunks of 128 KiB, windows ending on a 64 KiB boundary inside a chunk.
    const std::uint64_t cs = 2 * K;
    ChunkClassifier c(4 * K, cs, true);
    auto first = c.feed(0, K, {});  // first half of chunk 0: clean so far
    EXPECT_TRUE(first.empty());
    auto second = c.feed(K, 4 * K, {{K, K, R::Kind::data}});
    EXPECT_EQ(second, (std::vector<CopyOp>{{0, cs, Kind::data}, {cs, cs, Kind::unchanged}}));
}

TEST(ChunkClassifier, TheLastChunkMayBeShort) {
    ChunkClassifier c(K + 512, K, false);
    auto ops = c.feed(0, K + 512, {{0, K + 512, R::Kind::data}});
    EXPECT_EQ(ops, (std::vector<CopyOp>{{0, K + 512, Kind::data}}));
}

}  // namespace
}  // namespace vmshadow::engine
