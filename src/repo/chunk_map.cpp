// SPDX-License-Identifier: MIT
#include "repo/chunk_map.h"

#include <algorithm>
#include <cstring>

#include "repo/repository.h"

namespace vmshadow::repo {

std::vector<std::uint64_t> map_level_counts(std::uint64_t size, std::uint32_t chunk_size,
                                            std::uint32_t fanout) {
    std::vector<std::uint64_t> counts{(size + chunk_size - 1) / chunk_size};
    do {
        counts.push_back((counts.back() + fanout - 1) / fanout);
    } while (counts.back() > 1);
    if (counts.back() == 0) counts.back() = 1;  // an empty object: one hole root
    return counts;
}

Result<std::vector<Hash256>> decode_map_block(ByteView bytes, std::uint64_t expected) {
    if (bytes.size() != expected * 32)
        return fail(ErrorKind::corruption, "chunk-map block has " + std::to_string(bytes.size()) +
                                               " bytes, expected " + std::to_string(expected * 32));
    std::vector<Hash256> ids(expected);
    for (std::uint64_t i = 0; i < expected; ++i)
        std::memcpy(ids[i].bytes.data(), bytes.data() + i * 32, 32);
    return ids;
}

ChunkMap::ChunkMap(const BlobSource& source, const MapRef& ref, std::uint64_t size,
                   std::uint32_t chunk_size, std::uint32_t fanout)
    : source_(source),
      ref_(ref),
      fanout_(fanout),
      counts_(map_level_counts(size, chunk_size, fanout)),
      cache_(counts_.size()) {}

Status ChunkMap::validate() const {
    if (ref_.levels != counts_.size() - 1)
        return fail(ErrorKind::corruption, "chunk map has " + std::to_string(ref_.levels) +
                                               " levels, its size needs " +
                                               std::to_string(counts_.size() - 1));
    return {};
}

Result<const std::vector<Hash256>*> ChunkMap::block(std::uint32_t level,
                                                    std::uint64_t block_index) {
    // The block holding entries of `level` is entry `block_index` of level + 1.
    auto id = entry(level + 1, block_index);
    if (!id) return std::unexpected(id.error());
    Cached& c = cache_[level];
    if (c.valid && c.id == *id) return &c.ids;
    std::uint64_t first = block_index * fanout_;
    std::uint64_t expected = std::min<std::uint64_t>(fanout_, counts_[level] - first);
    c.valid = false;
    if (id->is_zero()) {
        c.ids.assign(expected, kHoleId);
    } else {
        auto bytes = source_.read_blob(*id);
        if (!bytes) return std::unexpected(bytes.error().with_context("chunk-map block"));
        auto ids = decode_map_block(*bytes, expected);
        if (!ids)
            return std::unexpected(ids.error().with_context("chunk-map block " + id->short_hex()));
        c.ids = std::move(*ids);
    }
    c.id = *id;
    c.valid = true;
    return &c.ids;
}

Result<Hash256> ChunkMap::entry(std::uint32_t level, std::uint64_t index) {
    if (level + 1 >= counts_.size()) return ref_.root;
    if (index >= counts_[level]) return fail(ErrorKind::internal, "chunk index out of range");
    auto b = block(level, index / fanout_);
    if (!b) return std::unexpected(b.error());
    return (**b)[index % fanout_];
}

Status ChunkMap::for_each_chunk(const std::function<Status(std::uint64_t, const Hash256&)>& fn) {
    return for_each_chunk(0, leaf_count(), fn);
}

Status ChunkMap::for_each_chunk(std::uint64_t first, std::uint64_t count,
                                const std::function<Status(std::uint64_t, const Hash256&)>& fn) {
    if (auto st = validate(); !st) return st;
    std::uint64_t end = std::min(leaf_count(), first + std::min(count, leaf_count()));
    for (std::uint64_t b = first; b < end; ++b) {
        auto id = entry(1, b);
        if (!id) return std::unexpected(id.error());
        if (id->is_zero()) continue;  // a whole block of holes
        auto ids = block(0, b);
        if (!ids) return std::unexpected(ids.error());
        std::vector<Hash256> copy = **ids;  // fn may re-enter the map
        for (std::uint64_t i = 0; i < copy.size(); ++i)
            if (!copy[i].is_zero())
                if (auto st = fn(b * fanout_ + i, copy[i]); !st) return st;
    }
    return {};
}

Status ChunkMap::walk(std::uint32_t level, std::uint64_t index,
                      const std::function<Result<bool>(std::uint32_t, const Hash256&)>& fn) {
    // `level` is a block level: the block is entry `index` of entry-level `level + 1`.
    auto id = entry(level + 1, index);
    if (!id) return std::unexpected(id.error());
    if (id->is_zero()) return {};
    auto descend = fn(level, *id);
    if (!descend) return std::unexpected(descend.error());
    if (!*descend) return {};
    auto ids = block(level, index);
    if (!ids) return std::unexpected(ids.error());
    if (level == 0) return {};
    std::uint64_t first = index * fanout_;
    std::uint64_t n = (*ids)->size();
    for (std::uint64_t i = 0; i < n; ++i)
        if (auto st = walk(level - 1, first + i, fn); !st) return st;
    return {};
}

Status ChunkMap::for_each_block(
    const std::function<Result<bool>(std::uint32_t, const Hash256&)>& fn) {
    if (auto st = validate(); !st) return st;
    return walk(static_cast<std::uint32_t>(counts_.size() - 2), 0, fn);
}

}  // namespace vmshadow::repo
