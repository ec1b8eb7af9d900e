// SPDX-License-Identifier: MIT
#pragma once
// Index: which pack holds which blob.
//
// This module is: the in-memory map from blob id to (pack, offset, length) built from the
// index files under index/, and the encoding of one index file. It is not: the source of
// truth (packs carry their own trailers; the index can be rebuilt from them).
//
// Index file (name = SHA-256 of the file, never change):
//   seal(domain "index", "VSIX" | version:u32 | pack_count:u32 |
//        { pack_id[32] | pack_size:u64 | entry_count:u32 | entry × entry_count } × pack_count)
// version is the repository's format version; entries have that version's size (format.h).
// Several index files may name the same blob (two backups stored it concurrently); any copy
// is valid. An index file is written only after every pack it names is durable.
//
// Memory: about 70 bytes per distinct blob (a 64 KiB chunk), i.e. ~1.1 MiB per 1 GiB of
// unique stored data.
//
// Thread-safety: const methods are safe concurrently; add_pack needs exclusive access.

#include <optional>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "repo/pack.h"

namespace vmshadow::repo {

// The error for a chunk a reader needs that no index file names.
inline Error not_in_index(const Hash256& id) {
    return Error(
        ErrorKind::corruption,
        "chunk " + id.hex() + " is not in the index (data missing; run `vmshadow repo check`)");
}

class Index {
  public:
    struct Location {
        const Hash256* pack;
        BlobEntry entry;
    };

    void add_pack(const PackInfo& pack);
    std::optional<Location> find(const Hash256& id) const;
    bool contains(const Hash256& id) const { return blobs_.contains(id); }
    bool has_pack(const Hash256& id) const { return pack_numbers_.contains(id); }
    std::size_t blob_count() const { return blobs_.size(); }
    const std::vector<Hash256>& packs() const { return packs_; }
    std::uint64_t pack_size(std::size_t n) const { return pack_sizes_[n]; }
    // The size an index file gives pack `id`, if any names it.
    std::optional<std::uint64_t> size_of_pack(const Hash256& id) const {
        auto it = pack_numbers_.find(id);
        if (it == pack_numbers_.end()) return std::nullopt;
        return pack_sizes_[it->second];
    }
    // Calls f(blob id, pack id, offset, stored length) for every indexed blob, in no order.
    template <typename F>
    void for_each_blob(F&& f) const {
        for (const auto& [id, loc] : blobs_) f(id, packs_[loc.pack], loc.offset, loc.length);
    }

  private:
    struct Loc {
        std::uint64_t offset;
        std::uint32_t pack;
        std::uint32_t length;
        std::uint32_t raw_length;
        std::uint32_t frame_offset;
        std::uint32_t frame_length;
        std::uint8_t type;
        std::uint8_t flags;
    };
    std::vector<Hash256> packs_;
    std::vector<std::uint64_t> pack_sizes_;
    std::unordered_map<Hash256, std::uint32_t, Hash256Hasher> pack_numbers_;
    std::unordered_map<Hash256, Loc, Hash256Hasher> blobs_;
};

// `version`: the repository's format version (1 or 2).
Bytes encode_index_file(const std::vector<PackInfo>& packs, const Codec& codec,
                        std::uint32_t version);
Result<std::vector<PackInfo>> decode_index_file(ByteView file, const Codec& codec);

}  // namespace vmshadow::repo
