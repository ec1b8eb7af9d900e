// SPDX-License-Identifier: MIT
#include "repo/pack.h"

#include <cstring>

namespace vmshadow::repo {
namespace {
constexpr std::size_t kWriteBuffer = 1 << 20;
constexpr std::string_view kTrailerDomain = "pack";
}  // namespace

std::size_t entry_size(std::uint32_t version) {
    return version >= format::kPackVersionFramed ? format::kEntrySizeFramed
                                                 : format::kEntrySizeSingle;
}

void encode_entry(Bytes& out, const BlobEntry& e, std::uint32_t version) {
    out.insert(out.end(), e.id.bytes.begin(), e.id.bytes.end());
    out.push_back(static_cast<std::uint8_t>(e.type));
    out.push_back((e.compressed ? format::kFlagCompressed : 0) |
                  (e.framed ? format::kFlagFramed : 0));
    put_u16(out, 0);
    put_u64(out, e.offset);
    put_u32(out, e.length);
    put_u32(out, e.raw_length);
    if (version >= format::kPackVersionFramed) {
        put_u32(out, e.frame_offset);
        put_u32(out, e.frame_length);
    }
}

BlobEntry decode_entry(const std::uint8_t* p, std::uint32_t version) {
    BlobEntry e;
    std::memcpy(e.id.bytes.data(), p, 32);
    e.type = static_cast<format::BlobType>(p[32]);
    e.compressed = p[33] & format::kFlagCompressed;
    e.offset = get_u64(p + 36);
    e.length = get_u32(p + 44);
    e.raw_length = get_u32(p + 48);
    if (version >= format::kPackVersionFramed) {
        e.framed = p[33] & format::kFlagFramed;
        e.frame_offset = get_u32(p + 52);
        e.frame_length = get_u32(p + 56);
    }
    return e;
}

bool entry_is_sane(const BlobEntry& e) {
    // No blob is larger than the largest chunk (16 MiB), nor any frame; stored forms are at
    // most their plaintext plus the encryption overhead (incompressible data is stored raw).
    if (e.raw_length > format::kMaxFrameBytes || e.length > format::kMaxFrameBytes + 64)
        return false;
    if (!e.framed) return true;
    return e.frame_length <= format::kMaxFrameBytes && e.frame_offset <= e.frame_length &&
           e.raw_length <= e.frame_length - e.frame_offset;
}

Result<Bytes> decode_stored(const Codec& codec, const BlobEntry& e, ByteView stored) {
    if (!entry_is_sane(e)) return fail(ErrorKind::corruption, "blob entry is damaged");
    if (!e.framed) return codec.decode_blob(e.id, stored, e.compressed, e.raw_length);
    return codec.decode_frame(stored, e.compressed, e.frame_length);
}

Result<Bytes> blob_of(const Codec& codec, const BlobEntry& e, ByteView plain) {
    if (!e.framed) return Bytes(plain.begin(), plain.end());  // decode_blob verified it
    if (e.frame_offset > plain.size() || e.raw_length > plain.size() - e.frame_offset)
        return fail(ErrorKind::corruption, "blob lies outside its frame (damaged entry)");
    ByteView slice = plain.subspan(e.frame_offset, e.raw_length);
    if (auto st = codec.verify(e.id, slice); !st) return std::unexpected(st.error());
    return Bytes(slice.begin(), slice.end());
}

std::string pack_path(const std::string& data_dir, const Hash256& id) {
    std::string hex = id.hex();
    return data_dir + "/" + hex.substr(0, 2) + "/" + hex;
}

PackWriter::PackWriter(Env& env, const Codec& codec, std::unique_ptr<WritableFile> file,
                       std::uint32_t version)
    : env_(env), codec_(codec), file_(std::move(file)), version_(version) {}

Result<std::unique_ptr<PackWriter>> PackWriter::create(Env& env, const Codec& codec,
                                                       const std::string& tmp_dir,
                                                       std::uint32_t version) {
    if (version < format::kPackVersionSingle || version > format::kPackVersionFramed)
        return fail(ErrorKind::internal, "pack version " + std::to_string(version));
    auto file = env.create(tmp_dir + "/" + unique_temp_name("pack"));
    if (!file) return std::unexpected(file.error());
    std::unique_ptr<PackWriter> w(new PackWriter(env, codec, std::move(*file), version));
    Bytes header(format::kPackMagic.begin(), format::kPackMagic.end());
    put_u32(header, version);
    if (auto st = w->write(header); !st) return std::unexpected(st.error());
    return w;
}

PackWriter::~PackWriter() {
    if (!finished_ && file_) {
        std::string path = file_->path();
        (void)file_->close();
        (void)env_.remove(path);  // best effort: after a crash, cleanup removes it
    }
}

Status PackWriter::write(ByteView data) {
    hash_.update(data);
    buffer_.insert(buffer_.end(), data.begin(), data.end());
    offset_ += data.size();
    if (buffer_.size() >= kWriteBuffer) return flush();
    return {};
}

Status PackWriter::flush() {
    if (buffer_.empty()) return {};
    Status st = file_->append(buffer_);
    buffer_.clear();
    return st;
}

Status PackWriter::add(const Hash256& id, format::BlobType type, ByteView stored, bool compressed,
                       std::uint32_t raw_length) {
    BlobEntry e;
    e.id = id;
    e.type = type;
    e.compressed = compressed;
    e.offset = offset_;
    e.length = static_cast<std::uint32_t>(stored.size());
    e.raw_length = raw_length;
    if (auto st = write(stored); !st) return st;
    entries_.push_back(e);
    return {};
}

Status PackWriter::add_frame(format::BlobType type, ByteView stored, bool compressed,
                             std::uint32_t frame_length, const std::vector<FrameMember>& members) {
    if (version_ < format::kPackVersionFramed)
        return fail(ErrorKind::internal, "frames need a version 2 pack");
    BlobEntry e;
    e.type = type;
    e.compressed = compressed;
    e.framed = true;
    e.offset = offset_;
    e.length = static_cast<std::uint32_t>(stored.size());
    e.frame_length = frame_length;
    if (auto st = write(stored); !st) return st;
    for (const auto& m : members) {
        e.id = m.id;
        e.frame_offset = m.frame_offset;
        e.raw_length = m.raw_length;
        entries_.push_back(e);
    }
    return {};
}

Result<PackInfo> PackWriter::finish(const std::string& data_dir) {
    Bytes plain;
    put_u32(plain, static_cast<std::uint32_t>(entries_.size()));
    for (const auto& e : entries_) encode_entry(plain, e, version_);
    Bytes trailer = codec_.seal(plain, kTrailerDomain);
    put_u32(trailer, static_cast<std::uint32_t>(trailer.size()));
    trailer.insert(trailer.end(), format::kPackEndMagic.begin(), format::kPackEndMagic.end());
    if (auto st = write(trailer); !st) return std::unexpected(st.error());
    if (auto st = flush(); !st) return std::unexpected(st.error());
    if (auto st = file_->sync(); !st) return std::unexpected(st.error());
    if (auto st = file_->close(); !st) return std::unexpected(st.error());
    PackInfo info{hash_.finish(), offset_, std::move(entries_)};
    std::string target = pack_path(data_dir, info.id);
    std::string subdir = target.substr(0, target.rfind('/'));
    if (!env_.exists(subdir)) {
        // Pack directories are made on first use (a small repository stays small).
        if (auto st = env_.make_dir(subdir); !st) return std::unexpected(st.error());
        if (auto st = env_.sync_dir(data_dir); !st) return std::unexpected(st.error());
    }
    if (auto st = env_.rename(file_->path(), target); !st) return std::unexpected(st.error());
    finished_ = true;
    if (auto st = env_.sync_dir(target.substr(0, target.rfind('/'))); !st)
        return std::unexpected(st.error());
    return info;
}

Result<std::vector<BlobEntry>> read_pack_trailer(const RandomAccessFile& file, const Codec& codec) {
    std::uint64_t size = file.size();
    if (size < format::kPackHeaderSize + format::kPackFooterSize)
        return fail(ErrorKind::corruption, "pack is truncated");
    std::uint8_t footer[format::kPackFooterSize];
    if (auto st = file.read_at(size - sizeof footer, footer); !st)
        return std::unexpected(st.error());
    std::uint32_t trailer_len = get_u32(footer);
    if (std::memcmp(footer + 4, format::kPackEndMagic.data(), 4) != 0 ||
        trailer_len > size - format::kPackHeaderSize - format::kPackFooterSize)
        return fail(ErrorKind::corruption, "pack trailer is damaged or the pack is truncated");
    std::uint8_t header[format::kPackHeaderSize];
    if (auto st = file.read_at(0, header); !st) return std::unexpected(st.error());
    if (std::memcmp(header, format::kPackMagic.data(), 4) != 0)
        return fail(ErrorKind::corruption, "pack header is damaged");
    std::uint32_t version = get_u32(header + 4);
    if (version < format::kPackVersionSingle || version > format::kPackVersionFramed)
        return fail(ErrorKind::unsupported,
                    "pack version " + std::to_string(version) + " is unknown; upgrade vmshadow");
    const std::size_t esize = entry_size(version);
    Bytes trailer(trailer_len);
    if (auto st = file.read_at(size - sizeof footer - trailer_len, trailer); !st)
        return std::unexpected(st.error());
    auto plain = codec.unseal(trailer, kTrailerDomain);
    if (!plain) return std::unexpected(plain.error().with_context("pack trailer"));
    if (plain->size() < 4) return fail(ErrorKind::corruption, "pack trailer is empty");
    std::uint32_t count = get_u32(plain->data());
    if (plain->size() != 4 + std::size_t(count) * esize)
        return fail(ErrorKind::corruption, "pack trailer has a wrong length");
    std::vector<BlobEntry> entries;
    entries.reserve(count);
    std::uint64_t data_end = size - sizeof footer - trailer_len;
    for (std::uint32_t i = 0; i < count; ++i) {
        BlobEntry e = decode_entry(plain->data() + 4 + std::size_t(i) * esize, version);
        if (e.offset < format::kPackHeaderSize || e.offset + e.length > data_end ||
            !entry_is_sane(e))
            return fail(ErrorKind::corruption, "pack trailer points outside the pack");
        entries.push_back(e);
    }
    return entries;
}

}  // namespace vmshadow::repo
