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

// Format versions this build can read and write. A repository whose config names a newer
// version is refused with ErrorKind::unsupported ("upgrade vmshadow").
inline constexpr int kVersion = 1;
inline constexpr int kMinReadable = 1;
inline constexpr int kMaxReadable = 1;

// Directory layout under the repository root (never change).
inline constexpr std::string_view kConfigFile = "config";
inline constexpr std::string_view kKeysDir = "keys";
inline constexpr std::string_view kDataDir = "data";  // data/<2 hex>/<pack id>
inline constexpr std::string_view kIndexDir = "index";
inline constexpr std::string_view kCommitsDir = "commits";
inline constexpr std::string_view kAnnotationsDir = "annotations";
inline constexpr std::string_view kLocksDir = "locks";
inline constexpr std::string_view kTmpDir = "tmp";

// Pack file: header magic + u32 version, blobs, sealed trailer, u32 trailer length + end
// magic (never change).
inline constexpr std::string_view kPackMagic = "VSPK";
inline constexpr std::string_view kPackEndMagic = "VSPE";
inline constexpr std::uint32_t kPackVersion = 1;
inline constexpr std::size_t kPackHeaderSize = 8;
inline constexpr std::size_t kPackFooterSize = 8;

// Index file payload magic + u32 version (never change).
inline constexpr std::string_view kIndexMagic = "VSIX";
inline constexpr std::uint32_t kIndexVersion = 1;

// Sealed metadata envelope magic (never change); see codec.h.
inline constexpr std::string_view kSealMagic = "VSMD";

// Blob types (never change).
enum class BlobType : std::uint8_t { data = 0, tree = 1 };

// Binary size of one blob entry in a pack trailer or index file (never change):
// id[32] type:u8 flags:u8 reserved:u16 offset:u64 length:u32 raw_length:u32.
inline constexpr std::size_t kEntrySize = 52;
inline constexpr std::uint8_t kFlagCompressed = 1;

// Defaults chosen by measurement (bench/RESULTS.md, "Repository"). The chunk size and map
// fanout are recorded in each repository's config and never change for that repository.
inline constexpr std::uint32_t kDefaultChunkSize = 64 * 1024;  // = QEMU dirty-bitmap granularity
inline constexpr std::uint32_t kDefaultMapFanout = 512;        // ids per chunk-map block (16 KiB)
inline constexpr int kDefaultZstdLevel = 2;  // bench/RESULTS.md: level 1 missed restic + 10%
inline constexpr std::uint64_t kDefaultPackSize = 16 * 1024 * 1024;

}  // namespace vmshadow::repo::format
