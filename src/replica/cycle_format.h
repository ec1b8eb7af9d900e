// SPDX-License-Identifier: MIT
#pragma once
// The replica cycle's wire format: how the changed extents of a VM's disks travel from the
// primary to the replica host inside the bodies of `PUT .../cycles/{id}/chunks/{seq}`
// (replica_protocol.h). Ours, versioned, and hostile-input safe on the decoding side.
//
// A chunk body is a sequence of frames; each frame is
//   magic "VRX1" (4 bytes) | kind u8 | disk u8 | flags u16 (0) | offset u64 | length u32 |
//   stored u32 | digest: the first 16 bytes of the SHA-256 of the uncompressed data (zero
//   frames: 16 zero bytes) | payload (`stored` bytes)
// all integers little-endian; header 40 bytes. Kinds:
//   data  (1): `length` bytes at `offset` of disk `disk`, payload zstd-compressed (stored <
//              length) or raw (stored == length);
//   zero  (2): `length` bytes at `offset` read as zeros (no payload, stored == 0).
// Limits, checked before anything is allocated or written: length ≤ kMaxFrameBytes (4 MiB),
// stored ≤ length (raw when compression does not help), offset + length ≤ the disk's size,
// offset and length multiples of 512, disk < the cycle's disk count. A chunk body is at most
// kMaxChunkBytes (32 MiB + one frame); the decoder refuses trailing bytes and partial frames.
// The digest of each frame's data is checked after decompression (a flipped bit on the wire
// or in a stored media file is an error naming the disk and offset, never a written extent).
// The commit carries the count of frames and the SHA-256 of all chunk bodies in order, so a
// missing or repeated chunk is caught before the point becomes visible.
//
// It is not: the HTTP exchange (replica_protocol.h) or where extents are written
// (replica_store.h).
//
// Thread-safety: pure functions and plain values; a ChunkEncoder is one thread's.
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow::replica {

inline constexpr std::uint32_t kMaxFrameBytes = 4u << 20;
inline constexpr std::size_t kMaxChunkBytes = (32u << 20) + (4u << 20) + 64;
inline constexpr std::size_t kFrameHeaderBytes = 40;

struct Frame {
    enum class Kind : std::uint8_t { data = 1, zero = 2 };
    Kind kind = Kind::data;
    std::uint8_t disk = 0;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    std::span<const std::byte> data;  // decoded: the uncompressed bytes (data frames only)
};

// Appends frames to a chunk body; the caller sends the body once size() passes its target
// (e.g. 16 MiB) and starts a new one with take().
class ChunkEncoder {
  public:
    explicit ChunkEncoder(int zstd_level = 1);
    Status add_data(std::uint8_t disk, std::uint64_t offset, std::span<const std::byte> data);
    Status add_zero(std::uint8_t disk, std::uint64_t offset, std::uint32_t length);
    std::size_t size() const { return body_.size(); }
    std::size_t frames() const { return frames_; }
    std::string take();  // the body so far; the encoder starts empty again
  private:
    int level_;
    std::string body_;
    std::size_t frames_ = 0;
};

struct DiskBounds {
    std::uint64_t size = 0;
};

// Decodes one chunk body, calling `frame` for each frame in order (its data span is valid
// only during the call). Every limit above is checked; the first violation is an error
// (invalid_argument for a malformed body, io for a digest mismatch) naming the frame's index,
// disk and offset, and no later frame is delivered. `frame`'s error stops the decode too.
Status decode_chunk(std::string_view body, const std::vector<DiskBounds>& disks,
                    const std::function<Status(const Frame&)>& frame);

// The running digest of a cycle: SHA-256 over every chunk body in sequence order.
class CycleDigest {
  public:
    CycleDigest();
    ~CycleDigest();
    CycleDigest(CycleDigest&&) noexcept;
    CycleDigest& operator=(CycleDigest&&) noexcept;
    void add(std::string_view chunk_body);
    std::string hex() const;  // of everything added so far (does not end the digest)
  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::replica
