// SPDX-License-Identifier: MIT
// The pure part of the NBD export walk: classifying block-status extents into the ranges a
// live backup reads (data) or records without reading (zero).
#include "virt/nbd_export.h"

#include <gtest/gtest.h>

namespace vmshadow::virt {
namespace {

using Kind = ExportRange::Kind;
constexpr std::uint64_t K = 1024;
constexpr std::uint64_t A = 64 * K;  // alignment
constexpr std::uint32_t kHoleZero = 3;
constexpr std::uint32_t kDirty = 1;

TEST(ClassifyWindow, FullReadsDataAndRecordsZeros) {
    // The reply shape TECH-REFERENCE §5 shows: 6 MiB hole, 1 MiB data, 13 MiB hole.
    std::vector<StatusExtent> alloc = {
        {0, 6 * K * K, kHoleZero}, {6 * K * K, K * K, 0}, {7 * K * K, 13 * K * K, kHoleZero}};
    auto r = classify_window(0, 20 * K * K, alloc, nullptr, A);
    std::vector<ExportRange> want = {{0, 6 * K * K, Kind::zero},
                                     {6 * K * K, K * K, Kind::data},
                                     {7 * K * K, 13 * K * K, Kind::zero}};
    EXPECT_EQ(r, want);
}

TEST(ClassifyWindow, IncrementalKeepsOnlyDirtyAndSplitsByAllocation) {
    std::vector<StatusExtent> alloc = {{0, 4 * A, 0}, {4 * A, 4 * A, kHoleZero}};
    std::vector<StatusExtent> dirty = {{0, A, 0}, {A, 5 * A, kDirty}, {6 * A, 2 * A, 0}};
    auto r = classify_window(0, 8 * A, alloc, &dirty, A);
    std::vector<ExportRange> want = {{A, 3 * A, Kind::data}, {4 * A, 2 * A, Kind::zero}};
    EXPECT_EQ(r, want);
}

TEST(ClassifyWindow, DataIsWidenedToTheAlignmentAndZerosGiveWay) {
    // 4 KiB of data inside a zero area (a raw file's fine-grained map).
    std::vector<StatusExtent> alloc = {
        {0, A + 4 * K, kHoleZero}, {A + 4 * K, 4 * K, 0}, {A + 8 * K, 3 * A - 8 * K, kHoleZero}};
    auto r = classify_window(0, 4 * A, alloc, nullptr, A);
    std::vector<ExportRange> want = {
        {0, A, Kind::zero}, {A, A, Kind::data}, {2 * A, 2 * A, Kind::zero}};
    EXPECT_EQ(r, want);
}

TEST(ClassifyWindow, WideningStopsAtTheWindowEnd) {
    // An export whose size is not a multiple of 64 KiB.
    std::uint64_t size = 2 * A + 512;
    std::vector<StatusExtent> alloc = {{0, 2 * A, kHoleZero}, {2 * A, 512, 0}};
    auto r = classify_window(0, size, alloc, nullptr, A);
    std::vector<ExportRange> want = {{0, 2 * A, Kind::zero}, {2 * A, 512, Kind::data}};
    EXPECT_EQ(r, want);
}

TEST(ClassifyWindow, NeighboursOfOneKindAreMerged) {
    std::vector<StatusExtent> alloc = {
        {0, A, 0}, {A, A, 0}, {2 * A, A, kHoleZero}, {3 * A, A, 2 /* zero, allocated */}};
    auto r = classify_window(0, 4 * A, alloc, nullptr, A);
    std::vector<ExportRange> want = {{0, 2 * A, Kind::data}, {2 * A, 2 * A, Kind::zero}};
    EXPECT_EQ(r, want);
}

TEST(ClassifyWindow, HoleWithoutZeroFlagIsRead) {
    std::vector<StatusExtent> alloc = {{0, A, 1 /* hole, contents unspecified */}};
    auto r = classify_window(0, A, alloc, nullptr, A);
    std::vector<ExportRange> want = {{0, A, Kind::data}};
    EXPECT_EQ(r, want);
}

TEST(ClassifyWindow, CleanWindowYieldsNothing) {
    std::vector<StatusExtent> alloc = {{0, 8 * A, 0}};
    std::vector<StatusExtent> dirty = {{0, 8 * A, 0}};
    EXPECT_TRUE(classify_window(0, 8 * A, alloc, &dirty, A).empty());
}

TEST(ClassifyWindow, ExtentsShorterThanTheWindowStopTheWalk) {
    // The caller clamps the window to what both contexts covered; if it did not, nothing
    // beyond the covered part is invented.
    std::vector<StatusExtent> alloc = {{0, 2 * A, 0}};
    auto r = classify_window(0, 8 * A, alloc, nullptr, A);
    std::vector<ExportRange> want = {{0, 2 * A, Kind::data}};
    EXPECT_EQ(r, want);
}

}  // namespace
}  // namespace vmshadow::virt
