// SPDX-License-Identifier: MIT
// The cycle wire format: frames round-trip, and every hostile body is refused before
// anything is written.
#include "replica/cycle_format.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <cstring>
#include <random>

namespace vmshadow::replica {
namespace {

constexpr std::uint64_t kDisk = 8u << 20;

std::vector<std::byte> pattern(std::size_t n, unsigned seed, bool compressible) {
    std::vector<std::byte> out(n);
    std::mt19937 rng(seed);
    for (std::size_t i = 0; i < n; ++i)
        out[i] = static_cast<std::byte>(compressible ? (i / 64) % 7 : rng());
    return out;
}

struct Decoded {
    Frame::Kind kind;
    std::uint8_t disk;
    std::uint64_t offset;
    std::uint32_t length;
    std::vector<std::byte> data;
};

Result<std::vector<Decoded>> decode(std::string_view body, std::size_t disks = 2) {
    std::vector<Decoded> out;
    std::vector<DiskBounds> bounds(disks, DiskBounds{kDisk});
    auto ok = decode_chunk(body, bounds, [&](const Frame& f) -> Status {
        out.push_back({f.kind, f.disk, f.offset, f.length, {f.data.begin(), f.data.end()}});
        return {};
    });
    if (!ok) return fail(ok.error());
    return out;
}

void put_u32(std::string& body, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) body[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u64(std::string& body, std::size_t at, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) body[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// One data frame of 64 KiB at 1 MiB of disk 0.
std::string one_frame(bool compressible = false) {
    ChunkEncoder encoder;
    EXPECT_TRUE(encoder.add_data(0, 1u << 20, pattern(64u << 10, 1, compressible)));
    return encoder.take();
}

void expect_refused(const std::string& body, ErrorKind kind, const std::string& words) {
    int delivered = 0;
    std::vector<DiskBounds> bounds(2, DiskBounds{kDisk});
    auto ok = decode_chunk(body, bounds, [&](const Frame&) -> Status {
        ++delivered;
        return {};
    });
    ASSERT_FALSE(ok) << "accepted: " << words;
    EXPECT_EQ(ok.error().kind(), kind) << ok.error().message();
    EXPECT_NE(ok.error().message().find(words), std::string::npos) << ok.error().message();
    EXPECT_EQ(delivered, 0);
}

TEST(CycleFormat, FramesRoundTripCompressedRawAndZero) {
    auto compressible = pattern(256u << 10, 1, true);
    auto random = pattern(128u << 10, 2, false);
    ChunkEncoder encoder;
    ASSERT_TRUE(encoder.add_data(0, 0, compressible));
    ASSERT_TRUE(encoder.add_data(1, 4096, random));
    ASSERT_TRUE(encoder.add_zero(1, 1u << 20, 3u << 20));
    EXPECT_EQ(encoder.frames(), 3u);
    // Compressible data shrinks; random data travels raw (never larger than itself).
    EXPECT_LT(encoder.size(), 3 * kFrameHeaderBytes + random.size() + compressible.size() / 4);
    EXPECT_GE(encoder.size(), 3 * kFrameHeaderBytes + random.size());
    std::string body = encoder.take();
    EXPECT_EQ(encoder.size(), 0u);
    EXPECT_EQ(encoder.frames(), 0u);
    auto frames = decode(body);
    ASSERT_TRUE(frames) << frames.error().message();
    ASSERT_EQ(frames->size(), 3u);
    EXPECT_EQ((*frames)[0].kind, Frame::Kind::data);
    EXPECT_EQ((*frames)[0].offset, 0u);
    EXPECT_EQ((*frames)[0].data, compressible);
    EXPECT_EQ((*frames)[1].disk, 1);
    EXPECT_EQ((*frames)[1].offset, 4096u);
    EXPECT_EQ((*frames)[1].data, random);
    EXPECT_EQ((*frames)[2].kind, Frame::Kind::zero);
    EXPECT_EQ((*frames)[2].length, 3u << 20);
    EXPECT_TRUE((*frames)[2].data.empty());
}

TEST(CycleFormat, EncoderRefusesWhatTheDecoderWould) {
    ChunkEncoder encoder;
    EXPECT_FALSE(encoder.add_data(0, 100, pattern(512, 1, true)));
    EXPECT_FALSE(encoder.add_data(0, 0, pattern(500, 1, true)));
    EXPECT_FALSE(encoder.add_data(0, 0, pattern(kMaxFrameBytes + 512, 1, true)));
    EXPECT_FALSE(encoder.add_zero(0, 0, 0));
    EXPECT_EQ(encoder.frames(), 0u);
}

TEST(CycleFormat, EmptyBodyHoldsNoFrames) {
    auto frames = decode("");
    ASSERT_TRUE(frames);
    EXPECT_TRUE(frames->empty());
}

TEST(CycleFormat, TruncatedHeaderIsRefused) {
    expect_refused(one_frame().substr(0, 39), ErrorKind::invalid_argument, "truncated header");
}

TEST(CycleFormat, TruncatedPayloadIsRefused) {
    std::string body = one_frame();
    expect_refused(body.substr(0, body.size() - 1), ErrorKind::invalid_argument,
                   "truncated payload");
}

TEST(CycleFormat, BadMagicIsRefused) {
    std::string body = one_frame();
    body[0] = 'X';
    expect_refused(body, ErrorKind::invalid_argument, "bad magic");
}

TEST(CycleFormat, UnknownKindFlagsAndDiskAreRefused) {
    std::string body = one_frame();
    body[4] = 7;
    expect_refused(body, ErrorKind::invalid_argument, "unknown kind");
    body = one_frame();
    body[6] = 1;
    expect_refused(body, ErrorKind::invalid_argument, "unknown flags");
    body = one_frame();
    body[5] = 2;
    expect_refused(body, ErrorKind::invalid_argument, "no such disk");
}

TEST(CycleFormat, OversizeOrUnalignedLengthIsRefused) {
    std::string body = one_frame();
    put_u32(body, 16, kMaxFrameBytes + 512);
    expect_refused(body, ErrorKind::invalid_argument, "length");
    body = one_frame();
    put_u32(body, 16, (64u << 10) + 1);
    expect_refused(body, ErrorKind::invalid_argument, "length");
    body = one_frame();
    put_u64(body, 8, (1u << 20) + 1);
    expect_refused(body, ErrorKind::invalid_argument, "offset is not a multiple");
}

TEST(CycleFormat, OffsetPastTheDiskEndIsRefused) {
    std::string body = one_frame();
    put_u64(body, 8, kDisk - 512);
    expect_refused(body, ErrorKind::invalid_argument, "ends past the disk");
    body = one_frame();
    put_u64(body, 8, kDisk + (1u << 20));
    expect_refused(body, ErrorKind::invalid_argument, "ends past the disk");
}

TEST(CycleFormat, OffsetPlusLengthOverflowIsRefused) {
    std::string body = one_frame();
    put_u64(body, 8, ~std::uint64_t{0} - 511);  // + 64 KiB wraps around to a small number
    expect_refused(body, ErrorKind::invalid_argument, "ends past the disk");
}

TEST(CycleFormat, StoredAboveLengthIsRefused) {
    std::string body = one_frame();
    put_u32(body, 20, (64u << 10) + 512);
    body.append(512, '\0');
    expect_refused(body, ErrorKind::invalid_argument, "exceed length");
}

TEST(CycleFormat, ZeroFrameWithPayloadOrDigestIsRefused) {
    ChunkEncoder encoder;
    ASSERT_TRUE(encoder.add_zero(0, 0, 4096));
    std::string zero = encoder.take();
    std::string body = zero;
    put_u32(body, 20, 512);
    body.append(512, '\0');
    expect_refused(body, ErrorKind::invalid_argument, "carries a payload");
    body = zero;
    body[30] = 1;
    expect_refused(body, ErrorKind::invalid_argument, "carries a digest");
}

TEST(CycleFormat, FlippedBitIsADigestErrorNamingDiskAndOffset) {
    for (bool compressible : {false, true}) {
        std::string body = one_frame(compressible);
        if (compressible) {
            body[27] ^= 0x01;  // in the digest: the compressed payload stays valid zstd
        } else {
            body[kFrameHeaderBytes + 1000] ^= 0x10;
        }
        expect_refused(body, ErrorKind::io, "disk 0, offset 1048576");
    }
}

TEST(CycleFormat, TrailingGarbageIsRefusedAndEarlierFramesStopTheDecode) {
    std::string body = one_frame() + "junk";
    std::vector<DiskBounds> bounds(2, DiskBounds{kDisk});
    auto ok = decode_chunk(body, bounds, [](const Frame&) -> Status { return {}; });
    ASSERT_FALSE(ok);
    EXPECT_NE(ok.error().message().find("frame 1"), std::string::npos) << ok.error().message();
}

TEST(CycleFormat, ACallbackErrorStopsTheDecode) {
    ChunkEncoder encoder;
    ASSERT_TRUE(encoder.add_zero(0, 0, 4096));
    ASSERT_TRUE(encoder.add_zero(0, 4096, 4096));
    int seen = 0;
    auto ok = decode_chunk(encoder.take(), {DiskBounds{kDisk}}, [&](const Frame&) -> Status {
        ++seen;
        return fail(ErrorKind::io, "disk full");
    });
    ASSERT_FALSE(ok);
    EXPECT_EQ(seen, 1);
}

TEST(CycleFormat, ZstdBombClaimingASmallLengthIsRefused) {
    // 4 MiB of zeros compress to a few hundred bytes; the frame claims 64 KiB.
    std::vector<char> zeros(4u << 20, 0);
    std::string payload(ZSTD_compressBound(zeros.size()), '\0');
    std::size_t n = ZSTD_compress(payload.data(), payload.size(), zeros.data(), zeros.size(), 1);
    ASSERT_FALSE(ZSTD_isError(n));
    payload.resize(n);
    std::string body = one_frame().substr(0, kFrameHeaderBytes);
    put_u32(body, 20, static_cast<std::uint32_t>(n));
    body += payload;
    expect_refused(body, ErrorKind::invalid_argument, "zstd");
}

TEST(CycleFormat, ZstdPayloadShorterThanItsLengthIsRefused) {
    std::vector<char> zeros(32u << 10, 0);
    std::string payload(ZSTD_compressBound(zeros.size()), '\0');
    std::size_t n = ZSTD_compress(payload.data(), payload.size(), zeros.data(), zeros.size(), 1);
    payload.resize(n);
    std::string body = one_frame().substr(0, kFrameHeaderBytes);
    put_u32(body, 20, static_cast<std::uint32_t>(n));
    body += payload;
    expect_refused(body, ErrorKind::invalid_argument, "zstd");
}

TEST(CycleFormat, OversizeBodyIsRefused) {
    std::string body(kMaxChunkBytes + 1, '\0');
    expect_refused(body, ErrorKind::invalid_argument, "exceeds");
}

TEST(CycleDigest, IsTheSha256OfTheBodiesInOrderAndCanContinue) {
    CycleDigest digest;
    EXPECT_EQ(digest.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    digest.add("ab");
    EXPECT_EQ(digest.hex().size(), 64u);
    digest.add("c");
    EXPECT_EQ(digest.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CycleDigest moved = std::move(digest);
    EXPECT_EQ(moved.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace vmshadow::replica
