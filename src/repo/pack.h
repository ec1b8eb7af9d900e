// SPDX-License-Identifier: MIT
#pragma once
// Pack files: many stored blobs in one file, so the repository's file count stays low.
//
// This module is: writing a pack (blobs appended to a temp file, then a trailer that lists
// them, fsync, rename to data/<2 hex>/<pack id>, fsync the directory) and reading blobs and
// trailers back. It is not: deciding which blobs to store (backup_session.h) or finding
// them (index.h).
//
// Pack layout (little-endian, never change):
//   "VSPK" | version:u32 = 1
//   blob 0 | blob 1 | ...                  (stored forms, see codec.h)
//   trailer = seal(domain "pack", count:u32 | entry × count)   (entry: format::kEntrySize)
//   trailer_length:u32 | "VSPE"
// The pack id is the SHA-256 of the whole file, so a pack is write-once and `check
// --read-data` can verify it; the trailer makes a pack self-describing (the index can be
// rebuilt from packs alone).
//
// Thread-safety: a PackWriter is used by one thread at a time (callers serialise).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "repo/codec.h"
#include "repo/env.h"
#include "repo/format.h"
#include "repo/hash.h"

namespace vmshadow::repo {

struct BlobEntry {
    Hash256 id;
    format::BlobType type = format::BlobType::data;
    bool compressed = false;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;      // stored bytes
    std::uint32_t raw_length = 0;  // plaintext bytes
};

void encode_entry(Bytes& out, const BlobEntry& e);
BlobEntry decode_entry(const std::uint8_t* p);

struct PackInfo {
    Hash256 id;
    std::uint64_t size = 0;
    std::vector<BlobEntry> entries;
};

std::string pack_path(const std::string& data_dir, const Hash256& id);

class PackWriter {
  public:
    // Creates a temp file in tmp_dir; the destructor removes it unless finish() succeeded.
    static Result<std::unique_ptr<PackWriter>> create(Env& env, const Codec& codec,
                                                      const std::string& tmp_dir);
    ~PackWriter();
    PackWriter(const PackWriter&) = delete;
    PackWriter& operator=(const PackWriter&) = delete;

    Status add(const Hash256& id, format::BlobType type, ByteView stored, bool compressed,
               std::uint32_t raw_length);
    std::uint64_t size() const { return offset_; }
    bool empty() const { return entries_.empty(); }

    // Writes the trailer, syncs and moves the pack to data_dir/<2 hex>/<id>.
    Result<PackInfo> finish(const std::string& data_dir);

  private:
    PackWriter(Env& env, const Codec& codec, std::unique_ptr<WritableFile> file);
    Status write(ByteView data);
    Status flush();

    Env& env_;
    const Codec& codec_;
    std::unique_ptr<WritableFile> file_;
    Sha256Stream hash_;
    Bytes buffer_;
    std::uint64_t offset_ = 0;
    std::vector<BlobEntry> entries_;
    bool finished_ = false;
};

// Reads and checks a pack's trailer.
Result<std::vector<BlobEntry>> read_pack_trailer(const RandomAccessFile& file, const Codec& codec);

}  // namespace vmshadow::repo
