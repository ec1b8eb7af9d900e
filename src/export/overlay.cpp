// SPDX-License-Identifier: MIT
#include "export/overlay.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "common/os_error.h"
#include "common/unique_fd.h"

namespace vmshadow::exporter {
namespace {

constexpr char kMagic[4] = {'V', 'S', 'O', 'V'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderSize = 256;
constexpr std::size_t kMaxBaseName = kHeaderSize - 32;

void put32(std::uint8_t* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put64(std::uint8_t* p, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get32(const std::uint8_t* p) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(p[i]) << (8 * i);
    return v;
}
std::uint64_t get64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(p[i]) << (8 * i);
    return v;
}

Status pwrite_all(int fd, const std::uint8_t* data, std::size_t n, std::uint64_t offset,
                  const std::string& path) {
    std::size_t done = 0;
    while (done < n) {
        ssize_t w = ::pwrite(fd, data + done, n - done, static_cast<off_t>(offset + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return std::unexpected(os_error("writing " + path, errno));
        done += static_cast<std::size_t>(w);
    }
    return {};
}

Status pread_all(int fd, std::uint8_t* data, std::size_t n, std::uint64_t offset,
                 const std::string& path) {
    std::size_t done = 0;
    while (done < n) {
        ssize_t r = ::pread(fd, data + done, n - done, static_cast<off_t>(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return std::unexpected(os_error("reading " + path, errno));
        if (r == 0) {  // past the end of a file shorter than the disk: zeros
            std::memset(data + done, 0, n - done);
            return {};
        }
        done += static_cast<std::size_t>(r);
    }
    return {};
}

bool all_zero(std::span<const std::uint8_t> d) {
    return std::all_of(d.begin(), d.end(), [](std::uint8_t b) { return b == 0; });
}

}  // namespace

struct OverlayDisk::Impl {
    repo::DiskReader& base;
    std::string data_path, map_path;
    UniqueFd data, map;
    std::uint64_t size;
    std::uint32_t chunk_size;
    std::uint64_t chunks;
    std::vector<std::uint8_t> bits;                     // one per chunk; empty when read-only
    std::uint64_t dirty_lo = UINT64_MAX, dirty_hi = 0;  // bitmap bytes changed since flush
    bool data_dirty = false;
    mutable std::shared_mutex mu;

    Impl(repo::DiskReader& b)
        : base(b),
          size(b.size()),
          chunk_size(b.chunk_size()),
          chunks((b.size() + b.chunk_size() - 1) / b.chunk_size()) {}

    bool writable() const { return static_cast<bool>(data); }
    bool has(std::uint64_t chunk) const {
        return writable() && (bits[chunk / 8] >> (chunk % 8)) & 1;
    }
    void set(std::uint64_t chunk) {
        bits[chunk / 8] |= static_cast<std::uint8_t>(1u << (chunk % 8));
        dirty_lo = std::min(dirty_lo, chunk / 8);
        dirty_hi = std::max(dirty_hi, chunk / 8 + 1);
    }
    std::uint64_t chunk_length(std::uint64_t chunk) const {
        return std::min<std::uint64_t>(chunk_size, size - chunk * chunk_size);
    }

    Status create_or_check(const std::string& base_name);
    Status write_chunk(std::uint64_t chunk, std::uint64_t within,
                       std::span<const std::uint8_t> data);
    Status flush();
};

Status OverlayDisk::Impl::create_or_check(const std::string& base_name) {
    if (base_name.size() > kMaxBaseName)
        return fail(ErrorKind::invalid_argument, "overlay base name too long");
    std::uint8_t header[kHeaderSize] = {};
    struct stat st {};
    if (::fstat(map.get(), &st) != 0)
        return std::unexpected(os_error("reading " + map_path, errno));
    bits.assign((chunks + 7) / 8, 0);
    if (st.st_size == 0) {  // new overlay
        std::memcpy(header, kMagic, 4);
        put32(header + 4, kVersion);
        put32(header + 8, chunk_size);
        put64(header + 16, size);
        put32(header + 24, static_cast<std::uint32_t>(base_name.size()));
        std::memcpy(header + 28, base_name.data(), base_name.size());
        if (auto s = pwrite_all(map.get(), header, kHeaderSize, 0, map_path); !s) return s;
        if (auto s = pwrite_all(map.get(), bits.data(), bits.size(), kHeaderSize, map_path); !s)
            return s;
        if (::ftruncate(data.get(), static_cast<off_t>(size)) != 0)
            return std::unexpected(os_error("sizing " + data_path, errno));
        if (::fsync(data.get()) != 0 || ::fsync(map.get()) != 0)
            return std::unexpected(os_error("syncing " + map_path, errno));
        return {};
    }
    if (auto s = pread_all(map.get(), header, kHeaderSize, 0, map_path); !s) return s;
    if (std::memcmp(header, kMagic, 4) != 0)
        return fail(ErrorKind::corruption, map_path + " is not a vmshadow overlay map");
    if (get32(header + 4) != kVersion)
        return fail(ErrorKind::unsupported, map_path + " has overlay version " +
                                                std::to_string(get32(header + 4)) +
                                                "; this vmshadow reads version 1");
    std::uint32_t name_length = std::min<std::uint32_t>(get32(header + 24), kMaxBaseName);
    std::string made_for(reinterpret_cast<const char*>(header + 28), name_length);
    if (made_for != base_name || get32(header + 8) != chunk_size || get64(header + 16) != size)
        return fail(ErrorKind::conflict, "overlay " + data_path + " was made for " + made_for +
                                             ", not " + base_name + "; use another overlay file");
    return pread_all(map.get(), bits.data(), bits.size(), kHeaderSize, map_path);
}

Status OverlayDisk::Impl::write_chunk(std::uint64_t chunk, std::uint64_t within,
                                      std::span<const std::uint8_t> d) {
    const std::uint64_t start = chunk * chunk_size;
    const std::uint64_t length = chunk_length(chunk);
    data_dirty = true;
    if (has(chunk)) return pwrite_all(data.get(), d.data(), d.size(), start + within, data_path);
    // First write to this chunk: the base's bytes, patched.
    std::vector<std::uint8_t> buffer(length);
    if (d.size() != length) {
        if (auto s = base.read(start, buffer); !s) return s;
    }
    std::memcpy(buffer.data() + within, d.data(), d.size());
    if (all_zero(buffer)) {
        if (::fallocate(data.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(start), static_cast<off_t>(length)) != 0) {
            if (auto s = pwrite_all(data.get(), buffer.data(), length, start, data_path); !s)
                return s;
        }
    } else if (auto s = pwrite_all(data.get(), buffer.data(), length, start, data_path); !s) {
        return s;
    }
    // The bit goes to the map now, not at the next flush: a server that is killed (instant
    // recovery resumes on a new one) must lose no write it acknowledged, and the page cache
    // keeps both files' writes. The chunk's bytes are synced first, so that after a host crash
    // the bit never points at bytes that were lost (the chunk then reads from the base).
    if (::fdatasync(data.get()) != 0)
        return std::unexpected(os_error("syncing " + data_path, errno));
    set(chunk);
    return pwrite_all(map.get(), bits.data() + chunk / 8, 1, kHeaderSize + chunk / 8, map_path);
}

Status OverlayDisk::Impl::flush() {
    if (!writable()) return {};
    if (data_dirty && ::fdatasync(data.get()) != 0)
        return std::unexpected(os_error("syncing " + data_path, errno));
    data_dirty = false;
    if (dirty_lo < dirty_hi) {
        if (auto s = pwrite_all(map.get(), bits.data() + dirty_lo, dirty_hi - dirty_lo,
                                kHeaderSize + dirty_lo, map_path);
            !s)
            return s;
        if (::fdatasync(map.get()) != 0)
            return std::unexpected(os_error("syncing " + map_path, errno));
        dirty_lo = UINT64_MAX;
        dirty_hi = 0;
    }
    return {};
}

OverlayDisk::OverlayDisk(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OverlayDisk::~OverlayDisk() {
    if (impl_) {
        std::unique_lock lock(impl_->mu);
        (void)impl_->flush();
    }
}

Result<std::unique_ptr<OverlayDisk>> OverlayDisk::open(repo::DiskReader& base,
                                                       const std::string& overlay_path,
                                                       const std::string& base_name) {
    auto impl = std::make_unique<Impl>(base);
    if (!overlay_path.empty()) {
        impl->data_path = overlay_path;
        impl->map_path = overlay_path + ".map";
        impl->data.reset(::open(overlay_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (!impl->data) return std::unexpected(os_error("opening overlay " + overlay_path, errno));
        impl->map.reset(::open(impl->map_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (!impl->map)
            return std::unexpected(os_error("opening overlay map " + impl->map_path, errno));
        if (auto s = impl->create_or_check(base_name); !s) return std::unexpected(s.error());
    }
    return std::unique_ptr<OverlayDisk>(new OverlayDisk(std::move(impl)));
}

std::uint64_t OverlayDisk::size() const {
    return impl_->size;
}

bool OverlayDisk::writable() const {
    return impl_->writable();
}

std::uint64_t OverlayDisk::overlay_chunks() const {
    std::shared_lock lock(impl_->mu);
    std::uint64_t n = 0;
    for (auto b : impl_->bits) n += static_cast<std::uint64_t>(__builtin_popcount(b));
    return n;
}

Status OverlayDisk::read(std::uint64_t offset, std::span<std::uint8_t> out) {
    Impl& d = *impl_;
    if (!d.writable()) return d.base.read(offset, out);
    if (offset > d.size || out.size() > d.size - offset)
        return fail(ErrorKind::invalid_argument, "read past the end of the disk");
    std::shared_lock lock(d.mu);
    std::size_t done = 0;
    while (done < out.size()) {
        std::uint64_t pos = offset + done;
        std::uint64_t chunk = pos / d.chunk_size;
        // A run of chunks with the same source is read in one call.
        bool from_overlay = d.has(chunk);
        std::uint64_t end = chunk + 1;
        while (end * d.chunk_size < offset + out.size() && d.has(end) == from_overlay) ++end;
        std::size_t n = static_cast<std::size_t>(
            std::min<std::uint64_t>(offset + out.size(), end * d.chunk_size) - pos);
        Status s = from_overlay ? pread_all(d.data.get(), out.data() + done, n, pos, d.data_path)
                                : d.base.read(pos, out.subspan(done, n));
        if (!s) return s;
        done += n;
    }
    return {};
}

Status OverlayDisk::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    Impl& d = *impl_;
    if (!d.writable()) return fail(ErrorKind::unsupported, "the disk is read-only (no overlay)");
    if (offset > d.size || data.size() > d.size - offset)
        return fail(ErrorKind::invalid_argument, "write past the end of the disk");
    std::unique_lock lock(d.mu);
    std::size_t done = 0;
    while (done < data.size()) {
        std::uint64_t pos = offset + done;
        std::uint64_t chunk = pos / d.chunk_size;
        std::uint64_t within = pos % d.chunk_size;
        std::size_t n = static_cast<std::size_t>(
            std::min<std::uint64_t>(data.size() - done, d.chunk_length(chunk) - within));
        if (auto s = d.write_chunk(chunk, within, data.subspan(done, n)); !s) return s;
        done += n;
    }
    return {};
}

Status OverlayDisk::flush() {
    std::unique_lock lock(impl_->mu);
    return impl_->flush();
}

Result<std::vector<repo::DiskExtent>> OverlayDisk::extents(std::uint64_t offset,
                                                           std::uint64_t length) {
    Impl& d = *impl_;
    auto base = d.base.extents(offset, length);
    if (!base || !d.writable()) return base;
    std::shared_lock lock(d.mu);
    std::vector<repo::DiskExtent> out;
    auto add = [&out](std::uint64_t start, std::uint64_t len, bool hole) {
        if (len == 0) return;
        if (!out.empty() && out.back().hole == hole &&
            out.back().offset + out.back().length == start)
            out.back().length += len;
        else
            out.push_back({start, len, hole});
    };
    for (const auto& e : *base) {
        if (!e.hole) {
            add(e.offset, e.length, false);
            continue;
        }
        // A base hole is data where the overlay holds the chunk.
        std::uint64_t pos = e.offset, end = e.offset + e.length;
        while (pos < end) {
            std::uint64_t chunk = pos / d.chunk_size;
            std::uint64_t stop = std::min(end, (chunk + 1) * d.chunk_size);
            add(pos, stop - pos, !d.has(chunk));
            pos = stop;
        }
    }
    return out;
}

}  // namespace vmshadow::exporter
