// SPDX-License-Identifier: MIT
#include "repo/crypto.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "common/hex.h"

namespace vmshadow::repo {
namespace {

struct CipherCtxFree {
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

// OpenSSL's hashes and GCM sealing fail only when it cannot allocate a context, or (the
// nonce) when the kernel's random generator cannot deliver: the host is out of memory or
// broken. They run per chunk, so they return plain values, and such a failure ends the
// process at once rather than throwing across the repository's interface: a crash, which
// every record and the repository's commit protocol already survive (as after SIGKILL).
[[noreturn]] void fatal_crypto_failure(const char* what) {
    std::fprintf(stderr, "vmshadow: fatal: OpenSSL %s failed (out of memory?)\n", what);
    std::abort();
}

}  // namespace

std::string Hash256::hex() const {
    return hex_encode(bytes);
}

std::optional<Hash256> Hash256::from_hex(std::string_view hex) {
    if (hex.size() != 64) return std::nullopt;
    Hash256 h;
    for (std::size_t i = 0; i < 32; ++i) {
        int hi = hex_digit_value(hex[2 * i]), lo = hex_digit_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        h.bytes[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return h;
}

Hash256 sha256(ByteView data) {
    Hash256 h;
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), h.bytes.data(), &len, EVP_sha256(), nullptr) != 1)
        fatal_crypto_failure("EVP_Digest");
    return h;
}

Hash256 hmac_sha256(ByteView key, ByteView data) {
    Hash256 h;
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(),
              h.bytes.data(), &len))
        fatal_crypto_failure("HMAC");
    return h;
}

Result<Bytes> random_bytes(std::size_t n) {
    Bytes out(n);
    if (RAND_bytes(out.data(), static_cast<int>(n)) != 1)
        return fail(ErrorKind::internal, "the system's random number generator failed");
    return out;
}

void gcm_seal(ByteView key, ByteView plaintext, ByteView aad, Bytes& out) {
    Bytes nonce(kGcmNonceSize);
    // A nonce must never repeat under one key: no weaker fallback.
    if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1)
        fatal_crypto_failure("RAND_bytes");
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    std::size_t start = out.size();
    out.resize(start + kGcmNonceSize + plaintext.size() + kGcmTagSize);
    std::uint8_t* p = out.data() + start;
    std::copy(nonce.begin(), nonce.end(), p);
    if (!ctx ||
        EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce.data()) != 1 ||
        (!aad.empty() && EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad.data(),
                                           static_cast<int>(aad.size())) != 1) ||
        EVP_EncryptUpdate(ctx.get(), p + kGcmNonceSize, &len, plaintext.data(),
                          static_cast<int>(plaintext.size())) != 1 ||
        EVP_EncryptFinal_ex(ctx.get(), p + kGcmNonceSize + len, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kGcmTagSize,
                            p + kGcmNonceSize + plaintext.size()) != 1)
        fatal_crypto_failure("AES-256-GCM encryption");
}

Status gcm_open_into(ByteView key, ByteView sealed, ByteView aad, std::span<std::uint8_t> out) {
    if (sealed.size() < kGcmOverhead)
        return fail(ErrorKind::corruption, "encrypted data is truncated");
    std::size_t n = sealed.size() - kGcmOverhead;
    if (out.size() != n) return fail(ErrorKind::internal, "decryption buffer has the wrong size");
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    std::array<std::uint8_t, kGcmTagSize> tag;
    std::copy(sealed.end() - kGcmTagSize, sealed.end(), tag.begin());
    bool ok =
        ctx &&
        EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), sealed.data()) == 1 &&
        (aad.empty() || EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data(),
                                          static_cast<int>(aad.size())) == 1) &&
        EVP_DecryptUpdate(ctx.get(), out.data(), &len, sealed.data() + kGcmNonceSize,
                          static_cast<int>(n)) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kGcmTagSize, tag.data()) == 1 &&
        EVP_DecryptFinal_ex(ctx.get(), out.data() + len, &len) == 1;
    if (!ok)
        return fail(ErrorKind::corruption,
                    "authentication failed (data damaged or written with another key)");
    return {};
}

Result<Bytes> gcm_open(ByteView key, ByteView sealed, ByteView aad) {
    if (sealed.size() < kGcmOverhead)
        return fail(ErrorKind::corruption, "encrypted data is truncated");
    Bytes plain(sealed.size() - kGcmOverhead);
    if (auto st = gcm_open_into(key, sealed, aad, plain); !st) return std::unexpected(st.error());
    return plain;
}

Result<Bytes> scrypt(std::string_view password, ByteView salt, const ScryptParams& params,
                     std::size_t key_length) {
    Bytes key(key_length);
    // maxmem: 128 * N * r * p plus slack; refuse silly parameters from a damaged key file.
    std::uint64_t need = 128ull * params.n * params.r * params.p + (1u << 20);
    if (params.n < 2 || params.n > (1u << 22) || params.r == 0 || params.r > 32 || params.p == 0 ||
        params.p > 16)
        return fail(ErrorKind::corruption, "key file has invalid scrypt parameters");
    if (EVP_PBE_scrypt(password.data(), password.size(), salt.data(), salt.size(), params.n,
                       params.r, params.p, need, key.data(), key.size()) != 1)
        return fail(ErrorKind::internal, "scrypt key derivation failed");
    return key;
}

}  // namespace vmshadow::repo

namespace vmshadow::repo {

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
        fatal_crypto_failure("EVP_DigestInit");
}
Sha256Stream::~Sha256Stream() {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}
void Sha256Stream::update(ByteView data) {
    EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}
Hash256 Sha256Stream::finish() {
    Hash256 h;
    unsigned int len = 0;
    EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), h.bytes.data(), &len);
    return h;
}

}  // namespace vmshadow::repo
