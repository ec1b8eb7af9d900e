// SPDX-License-Identifier: MIT
#pragma once
// Codec: how plaintext becomes stored bytes, for blobs (chunks, chunk-map blocks) and for
// sealed metadata files (pack trailers, index files, commit records, annotations).
//
// This module is: id computation (SHA-256, or HMAC-SHA-256 with the repository's id key when
// encrypted so ids reveal nothing about content), zstd compression, AES-256-GCM encryption,
// and integrity checks on the way back. It is not: where bytes are stored.
//
// Blob encoding (never change): stored = compressed-or-raw payload, or, when encrypted,
// GCM-seal(payload) with the blob id as associated data. The compressed flag lives in the
// pack entry. Decoding verifies that the plaintext hashes to the id: a flipped byte is a
// corruption error, never wrong data.
// Frame encoding (format version 2, never change): the same over the concatenated plaintext
// of several blobs, with the associated data "vmshadow-frame" (a frame has no single id).
// The binding of content to ids is kept all the same: every blob sliced out of a frame is
// verified against its own (keyed) id.
//
// Sealed metadata envelope (never change):
//   "VSMD" | version:u8 = 1 | flags:u8 (1 = encrypted, 2 = zstd-compressed) | reserved:u16 |
//   encrypted:   GCM-seal(payload), associated data = the domain string ("index", "commit"…)
//   unencrypted: payload | SHA-256(domain | header | payload)
//
// Thread-safety: const methods are safe from many threads (zstd contexts are per thread).

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/error.h"
#include "repo/crypto.h"
#include "repo/hash.h"

namespace vmshadow::repo {

// The repository's secret material (only in encrypted repositories). Never change sizes.
struct MasterKey {
    Bytes encryption;  // 32 bytes, AES-256-GCM
    Bytes id_key;      // 32 bytes, HMAC-SHA-256 for ids
};

class Codec {
  public:
    Codec(std::optional<MasterKey> key, int zstd_level)
        : key_(std::move(key)), level_(zstd_level) {}

    bool encrypted() const { return key_.has_value(); }
    Hash256 id_of(ByteView plaintext) const;

    // Appends the stored form of a blob to `out`; returns whether it was compressed.
    bool encode_blob(const Hash256& id, ByteView plain, Bytes& out) const;
    Result<Bytes> decode_blob(const Hash256& id, ByteView stored, bool compressed,
                              std::uint32_t raw_length) const;
    // A frame's stored form, and back to its plaintext of `raw_length` bytes. Decoding a
    // frame does not verify its blobs' ids; verify() each slice.
    bool encode_frame(ByteView plain, Bytes& out) const;
    Result<Bytes> decode_frame(ByteView stored, bool compressed, std::uint32_t raw_length) const;
    Status verify(const Hash256& id, ByteView plain) const;

    // Decodes a frame (no `id`) or a single blob (`id`: verified, as decode_blob does) into
    // buffers the caller keeps from one call to the next, so a restore decodes gigabytes
    // without allocating or zero-filling per frame. `scratch` and `out` only grow. The
    // plaintext returned lies in `out`, or in `stored` itself when there is nothing to
    // undo (neither encrypted nor compressed); valid until the buffers' next use.
    struct Buffers {
        Bytes scratch, out;
    };
    Result<ByteView> decode_into(const Hash256* id, ByteView stored, bool compressed,
                                 std::uint32_t raw_length, Buffers& buffers) const;

    Bytes seal(ByteView plain, std::string_view domain) const;
    Result<Bytes> unseal(ByteView sealed, std::string_view domain) const;

  private:
    bool encode(ByteView plain, ByteView associated, Bytes& out) const;
    Result<Bytes> decode(ByteView stored, ByteView associated, bool compressed,
                         std::uint32_t raw_length) const;
    // decode's and decode_into's one path: the plaintext in `buffers` (or `stored`), unverified.
    Result<ByteView> decode_to(ByteView stored, ByteView associated, bool compressed,
                               std::uint32_t raw_length, Buffers& buffers) const;

    std::optional<MasterKey> key_;
    int level_;
};

// Little-endian helpers for the binary formats.
void put_u16(Bytes& out, std::uint16_t v);
void put_u32(Bytes& out, std::uint32_t v);
void put_u64(Bytes& out, std::uint64_t v);
std::uint16_t get_u16(const std::uint8_t* p);
std::uint32_t get_u32(const std::uint8_t* p);
std::uint64_t get_u64(const std::uint8_t* p);

}  // namespace vmshadow::repo
