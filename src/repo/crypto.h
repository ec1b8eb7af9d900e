// SPDX-License-Identifier: MIT
#pragma once
// Cryptographic primitives of the repository, on OpenSSL EVP.
//
// This module is: SHA-256 and HMAC-SHA-256 (chunk ids), AES-256-GCM sealing (chunk and
// metadata encryption), scrypt (password → key-encryption key) and a CSPRNG. It is not: key
// management (keys.h) or the decision of what to encrypt (codec.h).
//
// On-disk layout of a GCM-sealed buffer (never change): nonce (12 bytes, random) ||
// ciphertext || tag (16 bytes). The caller's associated data binds the ciphertext to its
// identity (a chunk to its id) so that blobs cannot be swapped undetected.
//
// Errors are values; nothing throws. sha256, hmac_sha256, gcm_seal and Sha256Stream fail
// only when OpenSSL cannot allocate (or, for a nonce, the kernel has no random bytes): they
// then end the process with a message (crypto.cpp says why) instead of throwing.
//
// Thread-safety: every function is reentrant.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "repo/hash.h"

namespace vmshadow::repo {

using Bytes = std::vector<std::uint8_t>;

// The first `n` bytes of `b`, grown (never shrunk) to hold them: a buffer reused from one
// frame to the next is zero-filled only where it grows, never per use.
inline std::span<std::uint8_t> at_least(Bytes& b, std::size_t n) {
    if (b.size() < n) b.resize(n);
    return {b.data(), n};
}
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Hash256 sha256(ByteView data);
Hash256 hmac_sha256(ByteView key, ByteView data);

inline constexpr std::size_t kGcmNonceSize = 12;
inline constexpr std::size_t kGcmTagSize = 16;
inline constexpr std::size_t kGcmOverhead = kGcmNonceSize + kGcmTagSize;

// Appends nonce || ciphertext || tag to `out`.
void gcm_seal(ByteView key, ByteView plaintext, ByteView aad, Bytes& out);
// Verifies and decrypts; a wrong key or any changed byte gives a corruption error.
Result<Bytes> gcm_open(ByteView key, ByteView sealed, ByteView aad);
// The same into `out`, which holds exactly sealed.size() - kGcmOverhead bytes (a restore
// decrypts into buffers it reuses: a fresh zero-filled buffer per frame was a pass over the
// data of its own). What `out` holds after a failure is unspecified and must not be used.
Status gcm_open_into(ByteView key, ByteView sealed, ByteView aad, std::span<std::uint8_t> out);

// n bytes from the system's CSPRNG (ids, salts, keys).
Result<Bytes> random_bytes(std::size_t n);

struct ScryptParams {
    std::uint64_t n = 1u << 15;  // 32 MiB of memory with r = 8
    std::uint32_t r = 8;
    std::uint32_t p = 1;
};
Result<Bytes> scrypt(std::string_view password, ByteView salt, const ScryptParams& params,
                     std::size_t key_length);

}  // namespace vmshadow::repo

namespace vmshadow::repo {

// Incremental SHA-256 (pack files are hashed while they are written).
class Sha256Stream {
  public:
    Sha256Stream();
    ~Sha256Stream();
    Sha256Stream(const Sha256Stream&) = delete;
    Sha256Stream& operator=(const Sha256Stream&) = delete;
    void update(ByteView data);
    Hash256 finish();

  private:
    void* ctx_;  // EVP_MD_CTX, kept opaque so this header needs no OpenSSL include
};

}  // namespace vmshadow::repo
