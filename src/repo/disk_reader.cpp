// SPDX-License-Identifier: MIT
#include "repo/disk_reader.h"

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

#include "repo/chunk_map.h"

namespace vmshadow::repo {
namespace {

// A small least-recently-used cache; the caller locks.
template <typename Value>
class Lru {
  public:
    explicit Lru(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}

    const Value* find(std::uint64_t key) {
        auto it = map_.find(key);
        if (it == map_.end()) return nullptr;
        order_.splice(order_.begin(), order_, it->second);
        return &it->second->second;
    }
    void put(std::uint64_t key, Value value) {
        if (auto it = map_.find(key); it != map_.end()) {
            it->second->second = std::move(value);
            order_.splice(order_.begin(), order_, it->second);
            return;
        }
        order_.emplace_front(key, std::move(value));
        map_[key] = order_.begin();
        if (order_.size() > capacity_) {
            map_.erase(order_.back().first);
            order_.pop_back();
        }
    }

  private:
    std::size_t capacity_;
    std::list<std::pair<std::uint64_t, Value>> order_;
    std::unordered_map<std::uint64_t, typename decltype(order_)::iterator> map_;
};

using IdBlock = std::shared_ptr<const std::vector<Hash256>>;
using ChunkData = std::shared_ptr<const Bytes>;

}  // namespace

struct DiskReader::Impl {
    const BlobSource& source;
    MapRef map;
    std::uint64_t size;
    std::uint32_t chunk_size;
    std::uint32_t fanout;
    std::vector<std::uint64_t> counts;  // entries per level (map_level_counts)

    std::mutex mu;
    Lru<IdBlock> blocks;
    Lru<ChunkData> chunks;

    Impl(const BlobSource& s, const MapRef& m, std::uint64_t sz, std::uint32_t cs, std::uint32_t fo,
         const Options& o)
        : source(s),
          map(m),
          size(sz),
          chunk_size(cs),
          fanout(fo),
          counts(map_level_counts(sz, cs, fo)),
          blocks(o.cached_map_blocks),
          chunks(o.cached_chunks) {}

    std::uint64_t chunk_length(std::uint64_t chunk) const {
        return std::min<std::uint64_t>(chunk_size, size - chunk * chunk_size);
    }

    // The block of `level` entries numbered `block` (entries block*fanout…); nullptr when
    // the block is a hole.
    Result<IdBlock> block(std::uint32_t level, std::uint64_t index) {
        // Levels are < 2^8 and block numbers < 2^56 for any disk a 64-bit size can describe.
        std::uint64_t key = (std::uint64_t(level) << 56) | index;
        {
            std::lock_guard lock(mu);
            if (const IdBlock* hit = blocks.find(key)) return *hit;
        }
        auto id = entry(level + 1, index);
        if (!id) return std::unexpected(id.error());
        if (id->is_zero()) return IdBlock{};
        auto bytes = source.read_blob(*id);
        if (!bytes) return std::unexpected(bytes.error().with_context("chunk-map block"));
        std::uint64_t first = index * fanout;
        std::uint64_t expected = std::min<std::uint64_t>(fanout, counts[level] - first);
        auto ids = decode_map_block(*bytes, expected);
        if (!ids)
            return std::unexpected(ids.error().with_context("chunk-map block " + id->short_hex()));
        auto result = std::make_shared<const std::vector<Hash256>>(std::move(*ids));
        std::lock_guard lock(mu);
        blocks.put(key, result);
        return result;
    }

    Result<Hash256> entry(std::uint32_t level, std::uint64_t index) {
        if (level + 1 >= counts.size()) return map.root;
        if (index >= counts[level]) return fail(ErrorKind::internal, "chunk index out of range");
        auto b = block(level, index / fanout);
        if (!b) return std::unexpected(b.error());
        if (!*b) return kHoleId;
        return (**b)[index % fanout];
    }

    Result<ChunkData> chunk(std::uint64_t index, const Hash256& id) {
        {
            std::lock_guard lock(mu);
            if (const ChunkData* hit = chunks.find(index)) return *hit;
        }
        auto data = source.read_blob(id);
        if (!data) return std::unexpected(data.error());
        std::uint64_t expected = chunk_length(index);
        if (data->size() != expected)
            return fail(ErrorKind::corruption, "chunk " + id.short_hex() + " has " +
                                                   std::to_string(data->size()) +
                                                   " bytes, expected " + std::to_string(expected));
        auto result = std::make_shared<const Bytes>(std::move(*data));
        std::lock_guard lock(mu);
        chunks.put(index, result);
        return result;
    }
};

DiskReader::DiskReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DiskReader::~DiskReader() = default;

Result<std::unique_ptr<DiskReader>> DiskReader::open(const BlobSource& source, const MapRef& map,
                                                     std::uint64_t size, std::uint32_t chunk_size,
                                                     std::uint32_t fanout, Options options) {
    if (chunk_size == 0 || fanout < 2)
        return fail(ErrorKind::corruption, "invalid chunk size or map fanout");
    auto impl = std::make_unique<Impl>(source, map, size, chunk_size, fanout, options);
    if (map.levels != impl->counts.size() - 1)
        return fail(ErrorKind::corruption, "chunk map has " + std::to_string(map.levels) +
                                               " levels, its size needs " +
                                               std::to_string(impl->counts.size() - 1));
    return std::unique_ptr<DiskReader>(new DiskReader(std::move(impl)));
}

Result<std::unique_ptr<DiskReader>> DiskReader::open(const Repository& repo, const DiskRecord& disk,
                                                     Options options) {
    return with_context(open(repo, disk.map, disk.size, repo.config().chunk_size,
                             repo.config().map_fanout, options),
                        "disk " + disk.name);
}

std::uint64_t DiskReader::size() const {
    return impl_->size;
}

std::uint32_t DiskReader::chunk_size() const {
    return impl_->chunk_size;
}

Result<bool> DiskReader::is_hole(std::uint64_t chunk) {
    if (chunk >= impl_->counts[0]) return fail(ErrorKind::invalid_argument, "chunk out of range");
    auto id = impl_->entry(0, chunk);
    if (!id) return std::unexpected(id.error());
    return id->is_zero();
}

Status DiskReader::read(std::uint64_t offset, std::span<std::uint8_t> out) {
    Impl& d = *impl_;
    if (offset > d.size || out.size() > d.size - offset)
        return fail(ErrorKind::invalid_argument, "read of " + std::to_string(out.size()) +
                                                     " bytes at " + std::to_string(offset) +
                                                     " is past the end (" + std::to_string(d.size) +
                                                     " bytes)");
    std::size_t done = 0;
    while (done < out.size()) {
        std::uint64_t pos = offset + done;
        std::uint64_t index = pos / d.chunk_size;
        std::uint64_t within = pos % d.chunk_size;
        std::size_t n = static_cast<std::size_t>(
            std::min<std::uint64_t>(out.size() - done, d.chunk_length(index) - within));
        auto id = d.entry(0, index);
        if (!id) return std::unexpected(id.error());
        if (id->is_zero()) {
            std::memset(out.data() + done, 0, n);
        } else {
            auto data = d.chunk(index, *id);
            if (!data) return std::unexpected(data.error());
            std::memcpy(out.data() + done, (*data)->data() + within, n);
        }
        done += n;
    }
    return {};
}

Result<std::vector<DiskExtent>> DiskReader::extents(std::uint64_t offset, std::uint64_t length) {
    Impl& d = *impl_;
    if (offset > d.size || length > d.size - offset)
        return fail(ErrorKind::invalid_argument, "extents past the end of the disk");
    std::vector<DiskExtent> out;
    auto add = [&out](std::uint64_t start, std::uint64_t len, bool hole) {
        if (len == 0) return;
        if (!out.empty() && out.back().hole == hole &&
            out.back().offset + out.back().length == start)
            out.back().length += len;
        else
            out.push_back({start, len, hole});
    };
    const std::uint64_t end = offset + length;
    const std::uint64_t span = std::uint64_t(d.chunk_size) * d.fanout;  // one level-0 block
    std::uint64_t pos = offset;
    while (pos < end) {
        std::uint64_t index = pos / d.chunk_size;
        std::uint64_t block_index = index / d.fanout;
        // A level-0 block that is a hole: skip all of it at once. (counts has at least two
        // levels, so every chunk has a level-0 block.)
        auto block = d.block(0, block_index);
        if (!block) return std::unexpected(block.error());
        if (!*block) {
            std::uint64_t stop = std::min(end, (block_index + 1) * span);
            add(pos, stop - pos, true);
            pos = stop;
            continue;
        }
        bool hole = (**block)[index % d.fanout].is_zero();
        std::uint64_t stop = std::min(end, (index + 1) * std::uint64_t(d.chunk_size));
        add(pos, stop - pos, hole);
        pos = stop;
    }
    return out;
}

}  // namespace vmshadow::repo
