// SPDX-License-Identifier: MIT
#include "replica/cycle_format.h"

#include <openssl/evp.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/hex.h"

namespace vmshadow::replica {
namespace {

constexpr std::array<char, 4> kMagic{'V', 'R', 'X', '1'};
constexpr std::size_t kDigestBytes = 16;
constexpr std::uint32_t kSectorBytes = 512;

using Sha256 = std::array<unsigned char, 32>;

Sha256 sha256(std::span<const std::byte> data) {
    Sha256 out{};
    unsigned int n = 0;
    // One-shot EVP digest: cannot fail for SHA-256 short of an out-of-memory OpenSSL.
    (void)EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
    return out;
}

void put_le(std::string& out, std::uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::uint64_t get_le(const unsigned char* p, int bytes) {
    std::uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

void put_header(std::string& out, Frame::Kind kind, std::uint8_t disk, std::uint64_t offset,
                std::uint32_t length, std::uint32_t stored, const unsigned char* digest) {
    out.append(kMagic.data(), kMagic.size());
    out.push_back(static_cast<char>(kind));
    out.push_back(static_cast<char>(disk));
    put_le(out, 0, 2);
    put_le(out, offset, 8);
    put_le(out, length, 4);
    put_le(out, stored, 4);
    if (digest)
        out.append(reinterpret_cast<const char*>(digest), kDigestBytes);
    else
        out.append(kDigestBytes, '\0');
}

// The encoder refuses what the decoder would: a body it makes is always one the replica takes.
Status check_extent(std::uint64_t offset, std::uint64_t length) {
    if (length == 0 || length > kMaxFrameBytes || length % kSectorBytes || offset % kSectorBytes)
        return fail(ErrorKind::invalid_argument,
                    "replica frame at offset " + std::to_string(offset) + " of " +
                        std::to_string(length) +
                        " bytes: extents are 1..4 MiB, in multiples of 512 bytes");
    return {};
}

struct ZstdCCtxFree {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDCtxFree {
    void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

}  // namespace

ChunkEncoder::ChunkEncoder(int zstd_level) : level_(zstd_level) {}

Status ChunkEncoder::add_data(std::uint8_t disk, std::uint64_t offset,
                              std::span<const std::byte> data) {
    if (auto ok = check_extent(offset, data.size()); !ok) return ok;
    // A ChunkEncoder is one thread's; the context is reused across its frames.
    thread_local std::unique_ptr<ZSTD_CCtx, ZstdCCtxFree> cctx(ZSTD_createCCtx());
    if (!cctx) return fail(ErrorKind::internal, "zstd: cannot create a compression context");
    const auto length = static_cast<std::uint32_t>(data.size());
    const Sha256 digest = sha256(data);
    const std::size_t header_at = body_.size();
    put_header(body_, Frame::Kind::data, disk, offset, length, 0, digest.data());
    const std::size_t payload_at = body_.size();
    body_.resize(payload_at + ZSTD_compressBound(length));
    std::size_t stored = ZSTD_compressCCtx(cctx.get(), body_.data() + payload_at,
                                           body_.size() - payload_at, data.data(), length, level_);
    if (ZSTD_isError(stored) || stored >= length) {  // raw when compression does not shrink it
        std::memcpy(body_.data() + payload_at, data.data(), length);
        stored = length;
    }
    body_.resize(payload_at + stored);
    std::string stored_le;
    put_le(stored_le, stored, 4);
    body_.replace(header_at + 20, 4, stored_le);
    ++frames_;
    return {};
}

Status ChunkEncoder::add_zero(std::uint8_t disk, std::uint64_t offset, std::uint32_t length) {
    if (auto ok = check_extent(offset, length); !ok) return ok;
    put_header(body_, Frame::Kind::zero, disk, offset, length, 0, nullptr);
    ++frames_;
    return {};
}

std::string ChunkEncoder::take() {
    frames_ = 0;
    return std::exchange(body_, std::string());
}

Status decode_chunk(std::string_view body, const std::vector<DiskBounds>& disks,
                    const std::function<Status(const Frame&)>& frame) {
    if (body.size() > kMaxChunkBytes)
        return fail(ErrorKind::invalid_argument, "replica chunk of " + std::to_string(body.size()) +
                                                     " bytes exceeds " +
                                                     std::to_string(kMaxChunkBytes));
    std::unique_ptr<ZSTD_DCtx, ZstdDCtxFree> dctx;
    std::vector<std::byte> buffer;  // sized to a frame's checked length, reused
    const auto* p = reinterpret_cast<const unsigned char*>(body.data());
    std::size_t at = 0;
    for (std::size_t index = 0; at < body.size(); ++index) {
        std::string where = "replica chunk frame " + std::to_string(index);
        auto bad = [&](const std::string& why) {
            return fail(ErrorKind::invalid_argument, where + ": " + why);
        };
        if (body.size() - at < kFrameHeaderBytes) return bad("truncated header");
        const unsigned char* h = p + at;
        if (std::memcmp(h, kMagic.data(), kMagic.size()) != 0) return bad("bad magic");
        const unsigned kind = h[4];
        const unsigned disk = h[5];
        const auto flags = get_le(h + 6, 2);
        const std::uint64_t offset = get_le(h + 8, 8);
        const auto length = static_cast<std::uint32_t>(get_le(h + 16, 4));
        const auto stored = static_cast<std::uint32_t>(get_le(h + 20, 4));
        const unsigned char* digest = h + 24;
        where += " (disk " + std::to_string(disk) + ", offset " + std::to_string(offset) + ")";
        if (kind != static_cast<unsigned>(Frame::Kind::data) &&
            kind != static_cast<unsigned>(Frame::Kind::zero))
            return bad("unknown kind " + std::to_string(kind));
        if (flags != 0) return bad("unknown flags " + std::to_string(flags));
        if (disk >= disks.size())
            return bad("no such disk (the cycle has " + std::to_string(disks.size()) + ")");
        if (length == 0 || length > kMaxFrameBytes || length % kSectorBytes)
            return bad("length " + std::to_string(length) +
                       " is not 1..4 MiB in multiples of 512 bytes");
        if (offset % kSectorBytes) return bad("offset is not a multiple of 512 bytes");
        const std::uint64_t size = disks[disk].size;
        if (offset > size || length > size - offset)  // no overflow: offset ≤ size here
            return bad("extent of " + std::to_string(length) + " bytes ends past the disk's " +
                       std::to_string(size) + " bytes");
        if (stored > length)
            return bad("stored " + std::to_string(stored) + " bytes exceed length " +
                       std::to_string(length));
        const bool zero = kind == static_cast<unsigned>(Frame::Kind::zero);
        if (zero && stored != 0) return bad("a zero frame carries a payload");
        if (zero && std::any_of(digest, digest + kDigestBytes, [](unsigned char c) { return c; }))
            return bad("a zero frame carries a digest");
        if (stored > body.size() - at - kFrameHeaderBytes) return bad("truncated payload");
        at += kFrameHeaderBytes;
        Frame f{
            static_cast<Frame::Kind>(kind), static_cast<std::uint8_t>(disk), offset, length, {}};
        if (!zero) {
            std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(p + at), stored);
            if (stored == length) {
                f.data = payload;
            } else {
                if (!dctx) dctx.reset(ZSTD_createDCtx());
                if (!dctx) return fail(ErrorKind::internal, "zstd: cannot create a context");
                buffer.resize(length);
                // The output is exactly `length` bytes: a frame that claims or holds more is
                // an error of zstd's (dstSize_tooSmall), never a bigger allocation.
                std::size_t got = ZSTD_decompressDCtx(dctx.get(), buffer.data(), length,
                                                      payload.data(), payload.size());
                if (ZSTD_isError(got))
                    return bad(std::string("zstd payload: ") + ZSTD_getErrorName(got));
                if (got != length)
                    return bad("zstd payload holds " + std::to_string(got) + " bytes, not " +
                               std::to_string(length));
                f.data = std::span<const std::byte>(buffer.data(), length);
            }
            const Sha256 actual = sha256(f.data);
            if (std::memcmp(actual.data(), digest, kDigestBytes) != 0)
                return fail(ErrorKind::io, where + ": data does not match its digest");
            at += stored;
        }
        if (auto ok = frame(f); !ok) return ok;
    }
    return {};
}

struct CycleDigest::Impl {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    Impl() { EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr); }
    ~Impl() { EVP_MD_CTX_free(ctx); }
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
};

CycleDigest::CycleDigest() : impl_(std::make_unique<Impl>()) {}
CycleDigest::~CycleDigest() = default;
CycleDigest::CycleDigest(CycleDigest&&) noexcept = default;
CycleDigest& CycleDigest::operator=(CycleDigest&&) noexcept = default;

void CycleDigest::add(std::string_view chunk_body) {
    EVP_DigestUpdate(impl_->ctx, chunk_body.data(), chunk_body.size());
}

std::string CycleDigest::hex() const {
    // A copy is finished, so more chunks can still be added to the original.
    EVP_MD_CTX* copy = EVP_MD_CTX_new();
    std::array<std::uint8_t, 32> out{};
    unsigned int n = 0;
    EVP_MD_CTX_copy_ex(copy, impl_->ctx);
    EVP_DigestFinal_ex(copy, out.data(), &n);
    EVP_MD_CTX_free(copy);
    return hex_encode(out);
}

}  // namespace vmshadow::replica
