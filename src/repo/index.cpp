// SPDX-License-Identifier: MIT
#include "repo/index.h"

#include <cstring>

namespace vmshadow::repo {
namespace {
constexpr std::string_view kDomain = "index";
}

void Index::add_pack(const PackInfo& pack) {
    auto [it, inserted] =
        pack_numbers_.try_emplace(pack.id, static_cast<std::uint32_t>(packs_.size()));
    if (inserted) {
        packs_.push_back(pack.id);
        pack_sizes_.push_back(pack.size);
    }
    std::uint32_t n = it->second;
    for (const auto& e : pack.entries)
        blobs_.try_emplace(
            e.id, Loc{e.offset, n, e.length, e.raw_length, e.frame_offset, e.frame_length,
                      static_cast<std::uint8_t>(e.type),
                      static_cast<std::uint8_t>((e.compressed ? format::kFlagCompressed : 0) |
                                                (e.framed ? format::kFlagFramed : 0))});
}

std::optional<Index::Location> Index::find(const Hash256& id) const {
    auto it = blobs_.find(id);
    if (it == blobs_.end()) return std::nullopt;
    const Loc& l = it->second;
    BlobEntry e;
    e.id = id;
    e.type = static_cast<format::BlobType>(l.type);
    e.compressed = l.flags & format::kFlagCompressed;
    e.framed = l.flags & format::kFlagFramed;
    e.offset = l.offset;
    e.length = l.length;
    e.raw_length = l.raw_length;
    e.frame_offset = l.frame_offset;
    e.frame_length = l.frame_length;
    return Location{&packs_[l.pack], e};
}

Bytes encode_index_file(const std::vector<PackInfo>& packs, const Codec& codec,
                        std::uint32_t version) {
    Bytes plain(format::kIndexMagic.begin(), format::kIndexMagic.end());
    put_u32(plain, version);
    put_u32(plain, static_cast<std::uint32_t>(packs.size()));
    for (const auto& p : packs) {
        plain.insert(plain.end(), p.id.bytes.begin(), p.id.bytes.end());
        put_u64(plain, p.size);
        put_u32(plain, static_cast<std::uint32_t>(p.entries.size()));
        for (const auto& e : p.entries) encode_entry(plain, e, version);
    }
    return codec.seal(plain, kDomain);
}

Result<std::vector<PackInfo>> decode_index_file(ByteView file, const Codec& codec) {
    auto plain = codec.unseal(file, kDomain);
    if (!plain) return std::unexpected(plain.error());
    const Bytes& b = *plain;
    auto damaged = [] { return fail(ErrorKind::corruption, "index file is damaged"); };
    if (b.size() < 12 || std::memcmp(b.data(), format::kIndexMagic.data(), 4) != 0)
        return damaged();
    std::uint32_t version = get_u32(b.data() + 4);
    if (version < format::kIndexVersionSingle || version > format::kIndexVersionFramed)
        return fail(ErrorKind::unsupported, "index file version " + std::to_string(version) +
                                                " is unknown; upgrade vmshadow");
    const std::size_t esize = entry_size(version);
    std::uint32_t count = get_u32(b.data() + 8);
    std::size_t pos = 12;
    std::vector<PackInfo> packs;
    for (std::uint32_t i = 0; i < count; ++i) {
        if (b.size() - pos < 44) return damaged();
        PackInfo p;
        std::memcpy(p.id.bytes.data(), b.data() + pos, 32);
        p.size = get_u64(b.data() + pos + 32);
        std::uint32_t n = get_u32(b.data() + pos + 40);
        pos += 44;
        if ((b.size() - pos) / esize < n) return damaged();
        p.entries.reserve(n);
        for (std::uint32_t j = 0; j < n; ++j, pos += esize) {
            p.entries.push_back(decode_entry(b.data() + pos, version));
            if (!entry_is_sane(p.entries.back())) return damaged();
        }
        packs.push_back(std::move(p));
    }
    if (pos != b.size()) return damaged();
    return packs;
}

}  // namespace vmshadow::repo
