// SPDX-License-Identifier: MIT
#pragma once
// The repository's on-disk constants: directory names, magics, versions, limits.
//
// Everything here reaches disk. Values marked "never change" are part of format version 1;
// changing one is a new format version with a named migration (docs/REPOSITORY.md).
// Byte order of every binary integer: little-endian.

#include <cstdint>
#include <string_view>

namespace vmshadow::repo::format {

// Repository format versions this build can read and write. A repository whose config
// names a newer version is refused with ErrorKind::unsupported ("upgrade vmshadow").
//   1: every blob is stored on its own.
//   2: consecutive new data chunks are compressed together as one frame (up to
//      kFrameBytes) and share its stored bytes; pack and index entries say where a chunk
//      lies in its frame. `repo init` makes version 2; a version 1 repository is read and
//      written as version 1 (no frames), so older builds keep reading it.
inline constexpr int kVersion = 2;
inline constexpr int kMinReadable = 1;
inline constexpr int kMaxReadable = 2;
// Commit records and annotations have their own JSON version (never change).
inline constexpr int kRecordVersion = 1;

// Directory layout under the repository root (never change).
inline constexpr std::string_view kConfigFile = "config";
inline constexpr std::string_view kKeysDir = "keys";
inline constexpr std::string_view kDataDir = "data";  // data/<2 hex>/<pack id>
inline constexpr std::string_view kIndexDir = "index";
inline constexpr std::string_view kCommitsDir = "commits";
inline constexpr std::string_view kAnnotationsDir = "annotations";
inline constexpr std::string_view kLocksDir = "locks";
inline constexpr std::string_view kTmpDir = "tmp";
// Damaged commit records and annotations `repo repair records` moved aside; read by nothing,
// created on first use (older repositories lack it).
inline constexpr std::string_view kQuarantineDir = "quarantine";

// Pack file: header magic + u32 version, blobs, sealed trailer, u32 trailer length + end
// magic (never change).
inline constexpr std::string_view kPackMagic = "VSPK";
inline constexpr std::string_view kPackEndMagic = "VSPE";
// Packs of a version N repository are version N: their entries have that version's size.
inline constexpr std::uint32_t kPackVersionSingle = 1;
inline constexpr std::uint32_t kPackVersionFramed = 2;
inline constexpr std::size_t kPackHeaderSize = 8;
inline constexpr std::size_t kPackFooterSize = 8;

// Index file payload magic + u32 version (never change).
inline constexpr std::string_view kIndexMagic = "VSIX";
// Version 1 holds version 1 entries, version 2 version 2 entries.
inline constexpr std::uint32_t kIndexVersionSingle = 1;
inline constexpr std::uint32_t kIndexVersionFramed = 2;

// Sealed metadata envelope magic (never change); see codec.h.
inline constexpr std::string_view kSealMagic = "VSMD";

// Blob types (never change).
enum class BlobType : std::uint8_t { data = 0, tree = 1 };

// Binary size of one blob entry in a pack trailer or index file (never change):
//   version 1: id[32] type:u8 flags:u8 reserved:u16 offset:u64 length:u32 raw_length:u32
//   version 2: the same, then frame_offset:u32 frame_length:u32
// offset and length locate the stored bytes in the pack; raw_length is the blob's plaintext
// size. With kFlagFramed the stored bytes are a frame shared by several entries: its
// plaintext (frame_length bytes) holds this blob at frame_offset.
inline constexpr std::size_t kEntrySizeSingle = 52;
inline constexpr std::size_t kEntrySizeFramed = 60;
inline constexpr std::uint8_t kFlagCompressed = 1;
inline constexpr std::uint8_t kFlagFramed = 2;

// The most plaintext one frame (or blob: chunks are at most 16 MiB) holds; never more than
// this when reading, so a damaged entry cannot make a reader allocate without limit. 1 MiB frames
// store the benchmark image 7% smaller than 64 KiB blobs at the same zstd level and speed
// (bench/RESULTS.md).
inline constexpr std::uint32_t kFrameBytes = 1u << 20;
inline constexpr std::uint32_t kMaxFrameBytes = 16u << 20;

// Defaults chosen by measurement (bench/RESULTS.md, "Repository"). The chunk size and map
// fanout are recorded in each repository's config and never change for that repository.
inline constexpr std::uint32_t kDefaultChunkSize = 64 * 1024;  // = QEMU dirty-bitmap granularity
inline constexpr std::uint32_t kDefaultMapFanout = 512;        // ids per chunk-map block (16 KiB)
inline constexpr int kDefaultZstdLevel = 2;  // bench/RESULTS.md: level 1 missed restic + 10%
inline constexpr std::uint64_t kDefaultPackSize = 16 * 1024 * 1024;

}  // namespace vmshadow::repo::format
