// SPDX-License-Identifier: MIT
#pragma once
// Pack files: many stored blobs in one file, so the repository's file count stays low.
//
// This module is: writing a pack (blobs and frames appended to a temp file, then a trailer
// that lists them, fsync, rename to data/<2 hex>/<pack id>, fsync the directory) and reading
// trailers and blobs back (a framed blob is a verified slice of its frame's plaintext). It
// is not: deciding which blobs to store (backup_session.h) or finding them (index.h).
//
// Pack layout (little-endian, never change):
//   "VSPK" | version:u32 (1 or 2, the repository's format version)
//   stored 0 | stored 1 | ...              (blobs or frames, see codec.h)
//   trailer = seal(domain "pack", count:u32 | entry × count)   (entry: format.h, by version)
//   trailer_length:u32 | "VSPE"
// A version 2 pack may hold frames: one stored form that several entries point at, each
// naming its own slice of the frame's plaintext. Version 1 packs hold only single blobs.
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
    bool framed = false;             // the stored bytes are a frame shared with other entries
    std::uint64_t offset = 0;        // of the stored bytes in the pack
    std::uint32_t length = 0;        // stored bytes (the whole frame's, when framed)
    std::uint32_t raw_length = 0;    // plaintext bytes of this blob
    std::uint32_t frame_offset = 0;  // framed: where this blob starts in the frame's plaintext
    std::uint32_t frame_length = 0;  // framed: plaintext bytes of the whole frame
};

// Entry size of a pack trailer or index file of `version` (1 or 2).
std::size_t entry_size(std::uint32_t version);
void encode_entry(Bytes& out, const BlobEntry& e, std::uint32_t version);
BlobEntry decode_entry(const std::uint8_t* p, std::uint32_t version);
// Whether a decoded entry is possible (a framed blob lies inside a frame of bounded size);
// damaged metadata must fail here, not as a huge allocation later.
bool entry_is_sane(const BlobEntry& e);

// One blob of a frame being written: its id and where it lies in the frame's plaintext.
struct FrameMember {
    Hash256 id;
    std::uint32_t frame_offset = 0;
    std::uint32_t raw_length = 0;
};

// The plaintext of the stored bytes `stored` that entry `e` points at: the blob itself, or,
// for a framed entry, the whole frame (decrypted and decompressed, not yet verified).
Result<Bytes> decode_stored(const Codec& codec, const BlobEntry& e, ByteView stored);
// Entry `e`'s blob out of its decoded stored bytes (`plain` from decode_stored), checked
// against its id: a flipped byte is a corruption error, never wrong data.
Result<Bytes> blob_of(const Codec& codec, const BlobEntry& e, ByteView plain);

struct PackInfo {
    Hash256 id;
    std::uint64_t size = 0;
    std::vector<BlobEntry> entries;
};

std::string pack_path(const std::string& data_dir, const Hash256& id);

class PackWriter {
  public:
    // Creates a temp file in tmp_dir; the destructor removes it unless finish() succeeded.
    // `version` is the repository's format version (format.h): 2 allows frames.
    static Result<std::unique_ptr<PackWriter>> create(Env& env, const Codec& codec,
                                                      const std::string& tmp_dir,
                                                      std::uint32_t version);
    ~PackWriter();
    PackWriter(const PackWriter&) = delete;
    PackWriter& operator=(const PackWriter&) = delete;

    Status add(const Hash256& id, format::BlobType type, ByteView stored, bool compressed,
               std::uint32_t raw_length);
    // A frame (version 2 packs): `stored` once, one entry per member.
    Status add_frame(format::BlobType type, ByteView stored, bool compressed,
                     std::uint32_t frame_length, const std::vector<FrameMember>& members);
    std::uint64_t size() const { return offset_; }
    std::uint32_t version() const { return version_; }
    bool empty() const { return entries_.empty(); }

    // Writes the trailer, syncs and moves the pack to data_dir/<2 hex>/<id>.
    Result<PackInfo> finish(const std::string& data_dir);

  private:
    PackWriter(Env& env, const Codec& codec, std::unique_ptr<WritableFile> file,
               std::uint32_t version);
    Status write(ByteView data);
    Status flush();

    Env& env_;
    const Codec& codec_;
    std::unique_ptr<WritableFile> file_;
    std::uint32_t version_;
    Sha256Stream hash_;
    Bytes buffer_;
    std::uint64_t offset_ = 0;
    std::vector<BlobEntry> entries_;
    bool finished_ = false;
};

// Reads and checks a pack's header version and trailer; a newer version is refused
// (ErrorKind::unsupported, "upgrade vmshadow").
Result<std::vector<BlobEntry>> read_pack_trailer(const RandomAccessFile& file, const Codec& codec);

}  // namespace vmshadow::repo
