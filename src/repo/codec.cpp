// SPDX-License-Identifier: MIT
#include "repo/codec.h"

#include <zstd.h>

#include <algorithm>
#include <memory>
#include <span>
#include <stdexcept>

#include "repo/format.h"

namespace vmshadow::repo {
namespace {

// One zstd context per thread: creating one per 64 KiB chunk would dominate the cost.
struct CCtxFree {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
    void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};
ZSTD_CCtx* thread_cctx() {
    thread_local std::unique_ptr<ZSTD_CCtx, CCtxFree> ctx(ZSTD_createCCtx());
    return ctx.get();
}
ZSTD_DCtx* thread_dctx() {
    thread_local std::unique_ptr<ZSTD_DCtx, DCtxFree> ctx(ZSTD_createDCtx());
    return ctx.get();
}

constexpr int kChunkHashLog = 17;
constexpr std::size_t kSmallInput = 128 * 1024;

// Compresses into a per-thread scratch buffer; returns the compressed bytes (valid until
// the thread's next call) if they save at least 1/32 of the size, else nothing. The scratch
// buffer is allocated once per thread: a fresh, zero-filled buffer per 64 KiB chunk cost a
// measurable share of a backup's CPU time.
std::optional<ByteView> compress_scratch(ByteView plain, int level) {
    thread_local Bytes scratch;
    std::size_t bound = ZSTD_compressBound(plain.size());
    if (scratch.size() < bound) scratch.resize(std::max<std::size_t>(bound, 128u << 10));
    ZSTD_CCtx* cctx = thread_cctx();
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    // Levels 1-3 size their match-finder hash table for a 64 KiB input at 2^13-2^16 slots.
    // With 2^17 every position of a chunk has its own slot: on the benchmark image level 2
    // then compresses 8% faster and the output is no larger (bench/RESULTS.md). The stored
    // frames are ordinary zstd frames; decoding is unaffected. For 1 MiB frames zstd's own
    // table is 4-5% faster than 2^17 (0.2% larger), so it is left alone there.
    if (level >= 1 && level <= 3 && plain.size() <= kSmallInput)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, kChunkHashLog);
    std::size_t n =
        ZSTD_compress2(cctx, scratch.data(), scratch.size(), plain.data(), plain.size());
    if (ZSTD_isError(n) || n >= plain.size() - plain.size() / 32) return std::nullopt;
    return ByteView(scratch.data(), n);
}

std::optional<Bytes> compress(ByteView plain, int level) {
    auto packed = compress_scratch(plain, level);
    if (!packed) return std::nullopt;
    return Bytes(packed->begin(), packed->end());
}

Status decompress_into(ByteView data, std::span<std::uint8_t> out) {
    std::size_t n =
        ZSTD_decompressDCtx(thread_dctx(), out.data(), out.size(), data.data(), data.size());
    if (ZSTD_isError(n) || n != out.size())
        return fail(ErrorKind::corruption, "compressed data is damaged");
    return {};
}

Result<Bytes> decompress(ByteView data, std::size_t raw_length) {
    Bytes out(raw_length);
    if (auto st = decompress_into(data, out); !st) return std::unexpected(st.error());
    return out;
}

constexpr std::string_view kFrameAssociatedData = "vmshadow-frame";

constexpr std::uint8_t kSealEncrypted = 1;
constexpr std::uint8_t kSealCompressed = 2;
constexpr std::size_t kSealHeader = 8;
// Upper bound of a sealed metadata payload after decompression (1 GiB): a damaged frame
// header must not make us allocate without limit.
constexpr unsigned long long kMaxSealedPayload = 1ull << 30;

}  // namespace

void put_u16(Bytes& out, std::uint16_t v) {
    out.push_back(v & 0xff);
    out.push_back(v >> 8);
}
void put_u32(Bytes& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
void put_u64(Bytes& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
std::uint16_t get_u16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}
std::uint32_t get_u32(const std::uint8_t* p) {
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
           std::uint32_t(p[3]) << 24;
}
std::uint64_t get_u64(const std::uint8_t* p) {
    return std::uint64_t(get_u32(p)) | std::uint64_t(get_u32(p + 4)) << 32;
}

Hash256 Codec::id_of(ByteView plaintext) const {
    return key_ ? hmac_sha256(key_->id_key, plaintext) : sha256(plaintext);
}

bool Codec::encode(ByteView plain, ByteView associated, Bytes& out) const {
    std::optional<ByteView> packed =
        plain.size() >= 64 ? compress_scratch(plain, level_) : std::nullopt;
    ByteView payload = packed ? *packed : plain;
    if (key_)
        gcm_seal(key_->encryption, payload, associated, out);
    else
        out.insert(out.end(), payload.begin(), payload.end());
    return packed.has_value();
}

Result<ByteView> Codec::decode_to(ByteView stored, ByteView associated, bool compressed,
                                  std::uint32_t raw_length, Buffers& buffers) const {
    ByteView payload = stored;
    if (key_) {
        if (stored.size() < kGcmOverhead)
            return fail(ErrorKind::corruption, "encrypted data is truncated");
        auto into =
            at_least(compressed ? buffers.scratch : buffers.out, stored.size() - kGcmOverhead);
        if (auto st = gcm_open_into(key_->encryption, stored, associated, into); !st)
            return std::unexpected(st.error());
        payload = into;
    }
    if (compressed) {
        auto into = at_least(buffers.out, raw_length);
        if (auto st = decompress_into(payload, into); !st) return std::unexpected(st.error());
        return ByteView(into);
    }
    if (payload.size() != raw_length)
        return fail(ErrorKind::corruption, "stored length does not match the index");
    return payload;
}

Result<Bytes> Codec::decode(ByteView stored, ByteView associated, bool compressed,
                            std::uint32_t raw_length) const {
    Buffers buffers;
    auto plain = decode_to(stored, associated, compressed, raw_length, buffers);
    if (!plain) return std::unexpected(plain.error());
    // Fresh buffers grow to exactly what they hold: the plaintext in `out` is moved, not copied.
    if (plain->data() == buffers.out.data() && plain->size() == buffers.out.size())
        return std::move(buffers.out);
    return Bytes(plain->begin(), plain->end());
}

Result<ByteView> Codec::decode_into(const Hash256* id, ByteView stored, bool compressed,
                                    std::uint32_t raw_length, Buffers& buffers) const {
    ByteView associated = id ? ByteView(id->bytes) : as_bytes(kFrameAssociatedData);
    auto plain = decode_to(stored, associated, compressed, raw_length, buffers);
    if (plain && id)
        if (auto st = verify(*id, *plain); !st) return std::unexpected(st.error());
    return plain;
}

bool Codec::encode_blob(const Hash256& id, ByteView plain, Bytes& out) const {
    return encode(plain, id.bytes, out);
}

Result<Bytes> Codec::decode_blob(const Hash256& id, ByteView stored, bool compressed,
                                 std::uint32_t raw_length) const {
    auto plain = decode(stored, id.bytes, compressed, raw_length);
    if (!plain) return plain;
    if (auto st = verify(id, *plain); !st) return std::unexpected(st.error());
    return plain;
}

bool Codec::encode_frame(ByteView plain, Bytes& out) const {
    return encode(plain, as_bytes(kFrameAssociatedData), out);
}

Result<Bytes> Codec::decode_frame(ByteView stored, bool compressed,
                                  std::uint32_t raw_length) const {
    return decode(stored, as_bytes(kFrameAssociatedData), compressed, raw_length);
}

Status Codec::verify(const Hash256& id, ByteView plain) const {
    if (id_of(plain) != id)
        return fail(ErrorKind::corruption, "content does not match its id (damaged data)");
    return {};
}

Bytes Codec::seal(ByteView plain, std::string_view domain) const {
    std::optional<Bytes> packed = compress(plain, 3);
    ByteView payload = packed ? ByteView(*packed) : plain;
    Bytes out(format::kSealMagic.begin(), format::kSealMagic.end());
    out.push_back(1);
    out.push_back((key_ ? kSealEncrypted : 0) | (packed ? kSealCompressed : 0));
    put_u16(out, 0);
    if (key_) {
        gcm_seal(key_->encryption, payload, as_bytes(domain), out);
    } else {
        out.insert(out.end(), payload.begin(), payload.end());
        Bytes checked(domain.begin(), domain.end());
        checked.insert(checked.end(), out.begin(), out.end());
        Hash256 sum = sha256(checked);
        out.insert(out.end(), sum.bytes.begin(), sum.bytes.end());
    }
    return out;
}

Result<Bytes> Codec::unseal(ByteView sealed, std::string_view domain) const {
    if (sealed.size() < kSealHeader + 32 ||
        std::string_view(reinterpret_cast<const char*>(sealed.data()), 4) != format::kSealMagic)
        return fail(ErrorKind::corruption, "not a vmshadow metadata file (bad magic or truncated)");
    if (sealed[4] != 1)
        return fail(ErrorKind::unsupported,
                    "metadata envelope version " + std::to_string(sealed[4]) + " is unknown");
    std::uint8_t flags = sealed[5];
    bool encrypted = flags & kSealEncrypted;
    if (encrypted != key_.has_value())
        return fail(ErrorKind::corruption, encrypted ? "encrypted metadata in a plain repository"
                                                     : "unencrypted metadata in an encrypted "
                                                       "repository");
    Bytes opened;
    ByteView payload;
    if (key_) {
        auto o = gcm_open(key_->encryption, sealed.subspan(kSealHeader), as_bytes(domain));
        if (!o) return std::unexpected(o.error());
        opened = std::move(*o);
        payload = opened;
    } else {
        Bytes checked(domain.begin(), domain.end());
        checked.insert(checked.end(), sealed.begin(), sealed.end() - 32);
        Hash256 sum = sha256(checked);
        if (!std::equal(sum.bytes.begin(), sum.bytes.end(), sealed.end() - 32))
            return fail(ErrorKind::corruption, "checksum mismatch (damaged file)");
        payload = sealed.subspan(kSealHeader, sealed.size() - kSealHeader - 32);
    }
    if (!(flags & kSealCompressed)) return Bytes(payload.begin(), payload.end());
    unsigned long long size = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
        size > kMaxSealedPayload)
        return fail(ErrorKind::corruption, "compressed metadata is damaged");
    return decompress(payload, static_cast<std::size_t>(size));
}

}  // namespace vmshadow::repo
