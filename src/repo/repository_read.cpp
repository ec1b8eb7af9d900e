// SPDX-License-Identifier: MIT
// Repository::read_blob (repository.h): a blob by id, through a per-thread cache of decoded frames.
#include <algorithm>
#include <array>
#include <atomic>

#include "repo/format.h"
#include "repo/repository.h"

namespace vmshadow::repo {

namespace {

// Frames this thread decoded last. Restore, mount and verify read a disk's chunks in order,
// so without it each 64 KiB read would decode its whole frame again. Keyed by the
// Repository object (its serial number: each open sees the files as they are then), pack
// and offset; packs are write-once, and every blob taken from a cached frame is verified
// against its id, so a slot can never serve wrong data.
class FrameCache {
  public:
    const Bytes* find(std::uint64_t repo, const Hash256& pack, std::uint64_t offset) const {
        for (const auto& s : slots_)
            if (s.plain && s.repo == repo && s.offset == offset && s.pack == pack)
                return s.plain.get();
        return nullptr;
    }
    void put(std::uint64_t repo, const Hash256& pack, std::uint64_t offset, Bytes plain) {
        slots_[next_] = Slot{repo, pack, offset, std::make_unique<Bytes>(std::move(plain))};
        next_ = (next_ + 1) % slots_.size();
    }

  private:
    struct Slot {
        std::uint64_t repo = 0;
        Hash256 pack;
        std::uint64_t offset = 0;
        std::unique_ptr<Bytes> plain;
    };
    std::array<Slot, 8> slots_;
    std::size_t next_ = 0;
};

FrameCache& thread_frames() {
    thread_local FrameCache cache;
    return cache;
}

}  // namespace

std::uint64_t Repository::next_serial() {
    static std::atomic<std::uint64_t> next{1};
    return next++;
}

Result<std::shared_ptr<RandomAccessFile>> Repository::pack_file(const Hash256& pack) const {
    {
        std::lock_guard lock(files_mutex_);
        auto it = files_.find(pack);
        if (it != files_.end()) return it->second;
    }
    // The index knows the pack's size: on object storage that saves a HEAD per pack.
    auto size = index_.size_of_pack(pack);
    auto opened =
        size ? env_.open_sized(pack_file_path(pack), *size) : env_.open(pack_file_path(pack));
    if (!opened) return std::unexpected(opened.error());
    std::shared_ptr<RandomAccessFile> file = std::move(*opened);
    std::lock_guard lock(files_mutex_);
    if (files_.size() >= 64) files_.erase(files_.begin());  // bound open descriptors
    files_.emplace(pack, file);
    return file;
}

std::string Repository::pack_file_path(const Hash256& pack) const {
    return pack_path(dir(format::kDataDir), pack);
}

Status Repository::read_pack_range(const Hash256& pack, std::uint64_t offset,
                                   std::span<std::uint8_t> out) const {
    return read_range(pack, offset, out, "pack " + pack_file_path(pack));
}

Status Repository::read_range(const Hash256& pack, std::uint64_t offset,
                              std::span<std::uint8_t> out, const std::string& context) const {
    auto file = pack_file(pack);
    if (!file) {
        Error e = file.error();
        if (e.kind() == ErrorKind::not_found) e = Error(ErrorKind::corruption, e.message());
        return std::unexpected(e.with_context(context));
    }
    if (auto st = (*file)->read_at(offset, out); !st)
        return std::unexpected(st.error().with_context(context));
    return {};
}

Result<Bytes> Repository::read_blob(const Hash256& id) const {
    auto loc = index_.find(id);
    if (!loc) return std::unexpected(not_in_index(id));
    const BlobEntry& entry = loc->entry;
    if (entry.framed)
        if (const Bytes* frame = thread_frames().find(serial_, *loc->pack, entry.offset))
            if (auto blob = blob_of(codec_, entry, *frame)) return blob;
    const std::string context =
        "chunk " + id.short_hex() + " in pack " + pack_file_path(*loc->pack);
    Bytes stored(entry.length);
    if (auto st = read_range(*loc->pack, entry.offset, stored, context); !st)
        return std::unexpected(st.error());
    auto plain = decode_stored(codec_, entry, stored);
    if (!plain) return std::unexpected(plain.error().with_context(context));
    if (!entry.framed) return plain;
    auto blob = blob_of(codec_, entry, *plain);
    if (!blob) return std::unexpected(blob.error().with_context(context));
    thread_frames().put(serial_, *loc->pack, entry.offset, std::move(*plain));
    return blob;
}

}  // namespace vmshadow::repo
