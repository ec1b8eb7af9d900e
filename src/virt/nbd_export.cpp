// SPDX-License-Identifier: MIT
#include "virt/nbd_export.h"

#include <libnbd.h>

#include <algorithm>
#include <deque>

namespace vmshadow::virt {
namespace {

constexpr std::uint32_t kStateZero = LIBNBD_STATE_ZERO;  // base:allocation bit 1
constexpr std::uint32_t kStateDirty = 1;                 // qemu:dirty-bitmap bit 0

std::string nbd_error_text() {
    const char* e = nbd_get_error();
    return e ? e : "unknown libnbd error";
}

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) {
    return v / a * a;
}
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
    return (v + a - 1) / a * a;
}

void append_merged(std::vector<ExportRange>& out, ExportRange r) {
    if (r.length == 0) return;
    if (!out.empty() && out.back().kind == r.kind && out.back().end() >= r.offset) {
        out.back().length = std::max(out.back().end(), r.end()) - out.back().offset;
        return;
    }
    out.push_back(r);
}

// Extents of one context collected from block-status callbacks.
struct Collected {
    const char* context;
    std::vector<StatusExtent> extents;
    bool bad = false;  // a zero-length extent: a broken server
    std::uint64_t covered_to(std::uint64_t start) const {
        return extents.empty() ? start : extents.back().offset + extents.back().length;
    }
};

int collect(void* user, const char* context, uint64_t offset, uint32_t* entries, size_t nr_entries,
            int*) {
    auto* contexts = static_cast<std::vector<Collected>*>(user);
    for (auto& c : *contexts) {
        if (std::string_view(context) != c.context) continue;
        for (size_t i = 0; i + 1 < nr_entries; i += 2) {
            if (entries[i] == 0) {
                c.bad = true;
                break;
            }
            c.extents.push_back({offset, entries[i], entries[i + 1]});
            offset += entries[i];
        }
    }
    return 0;
}

// Cuts a context's extents to [start, end).
std::vector<StatusExtent> clamp(const std::vector<StatusExtent>& in, std::uint64_t start,
                                std::uint64_t end) {
    std::vector<StatusExtent> out;
    for (const auto& e : in) {
        std::uint64_t b = std::max(e.offset, start);
        std::uint64_t f = std::min(e.offset + e.length, end);
        if (b < f) out.push_back({b, f - b, e.flags});
    }
    return out;
}

}  // namespace

std::vector<ExportRange> classify_window(std::uint64_t start, std::uint64_t end,
                                         const std::vector<StatusExtent>& allocation,
                                         const std::vector<StatusExtent>* dirty,
                                         std::uint64_t alignment) {
    // 1. Merge-walk the contexts into classified ranges.
    std::vector<ExportRange> raw;
    std::size_t i = 0;
    std::size_t j = 0;
    std::uint64_t pos = start;
    while (pos < end && i < allocation.size() && (!dirty || j < dirty->size())) {
        const auto& a = allocation[i];
        std::uint64_t seg_end = std::min(end, a.offset + a.length);
        bool is_dirty = true;
        if (dirty) {
            const auto& d = (*dirty)[j];
            seg_end = std::min(seg_end, d.offset + d.length);
            is_dirty = d.flags & kStateDirty;
        }
        if (seg_end <= pos) break;  // extents do not cover pos: stop rather than loop
        if (is_dirty) {
            auto kind = (a.flags & kStateZero) ? ExportRange::Kind::zero : ExportRange::Kind::data;
            append_merged(raw, {pos, seg_end - pos, kind});
        }
        pos = seg_end;
        if (pos >= a.offset + a.length) ++i;
        if (dirty && pos >= (*dirty)[j].offset + (*dirty)[j].length) ++j;
    }
    // 2. Widen data to the alignment (within the window), merge overlaps.
    std::vector<ExportRange> data;
    for (const auto& r : raw) {
        if (r.kind != ExportRange::Kind::data) continue;
        std::uint64_t b = std::max(start, align_down(r.offset, alignment));
        std::uint64_t f = std::min(end, align_up(r.end(), alignment));
        append_merged(data, {b, f - b, ExportRange::Kind::data});
    }
    // 3. Zero ranges minus data; then both, in offset order.
    std::vector<ExportRange> out;
    std::size_t k = 0;
    for (const auto& r : raw) {
        if (r.kind != ExportRange::Kind::zero) continue;
        std::uint64_t b = r.offset;
        while (b < r.end()) {
            while (k < data.size() && data[k].end() <= b) {
                append_merged(out, data[k]);
                ++k;
            }
            if (k < data.size() && data[k].offset <= b) {  // b lies inside data[k]
                b = data[k].end();
                continue;
            }
            std::uint64_t f = r.end();
            if (k < data.size()) f = std::min(f, data[k].offset);
            append_merged(out, {b, f - b, ExportRange::Kind::zero});
            b = f;
        }
    }
    for (; k < data.size(); ++k) append_merged(out, data[k]);
    return out;
}

void NbdHandleClose::operator()(nbd_handle* h) const {
    nbd_shutdown(h, 0);
    nbd_close(h);
}

Result<NbdExport> NbdExport::connect(const Options& options) {
    std::string what =
        options.label + ": NBD export '" + options.export_name + "' on " + options.socket;
    NbdHandle h(nbd_create());
    if (!h) return fail(ErrorKind::internal, what + ": nbd_create: " + nbd_error_text());
    nbd_set_pread_initialize(h.get(), false);  // every buffer is overwritten by the read
    if (nbd_set_export_name(h.get(), options.export_name.c_str()) != 0 ||
        nbd_add_meta_context(h.get(), LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 ||
        (!options.dirty_context.empty() &&
         nbd_add_meta_context(h.get(), options.dirty_context.c_str()) != 0)) {
        return fail(ErrorKind::internal, what + ": " + nbd_error_text());
    }
    if (nbd_connect_unix(h.get(), options.socket.c_str()) != 0) {
        return fail(ErrorKind::unavailable, what + ": cannot connect: " + nbd_error_text() +
                                                " (has the backup job ended?)");
    }
    NbdExport out(options, std::move(h));
    nbd_handle* raw = out.handle_.get();
    int64_t size = nbd_get_size(raw);
    if (size < 0) return fail(ErrorKind::unavailable, what + ": size: " + nbd_error_text());
    out.size_ = static_cast<std::uint64_t>(size);
    int64_t max = nbd_get_block_size(raw, LIBNBD_SIZE_MAXIMUM);
    if (max > 0) out.max_request_ = std::min<std::uint64_t>(out.max_request_, max);
    out.multi_conn_ = nbd_can_multi_conn(raw) == 1;
    out.allocation_ = nbd_can_meta_context(raw, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    if (!options.dirty_context.empty() &&
        nbd_can_meta_context(raw, options.dirty_context.c_str()) != 1) {
        return fail(ErrorKind::unavailable,
                    what + ": the server offers no '" + options.dirty_context +
                        "' context, so the changed blocks are unknown; take a full backup");
    }
    return out;
}

Result<std::optional<std::vector<ExportRange>>> NbdExport::next_ranges() {
    if (walked_ >= size_) return std::optional<std::vector<ExportRange>>();
    std::uint64_t start = walked_;
    std::uint64_t end = std::min(size_, start + kWindow);
    std::string what = options_.label + ": block status at " + std::to_string(start);

    std::vector<Collected> contexts;
    if (allocation_) contexts.push_back({LIBNBD_CONTEXT_BASE_ALLOCATION, {}});
    if (incremental()) contexts.push_back({options_.dirty_context.c_str(), {}});
    if (!contexts.empty()) {
        nbd_extent_callback cb{.callback = collect, .user_data = &contexts, .free = nullptr};
        if (nbd_block_status(handle_.get(), end - start, start, cb, 0) != 0) {
            return fail(ErrorKind::io, what + ": " + nbd_error_text());
        }
        // The server may answer short (or overshoot): the window ends where the shortest
        // context's answer ends, on an alignment boundary when that leaves any progress.
        for (const auto& c : contexts) {
            if (c.bad || c.extents.empty() || c.extents.front().offset != start) {
                return fail(ErrorKind::io,
                            what + ": the server sent no usable extents for " + c.context);
            }
            end = std::min(end, c.covered_to(start));
        }
        if (end < size_ && align_down(end, kAlignment) > start) end = align_down(end, kAlignment);
    }
    std::vector<StatusExtent> allocation = allocation_
                                               ? clamp(contexts[0].extents, start, end)
                                               : std::vector<StatusExtent>{{start, end - start, 0}};
    std::vector<StatusExtent> dirty;
    if (incremental()) dirty = clamp(contexts.back().extents, start, end);
    walked_ = end;
    return std::optional(
        classify_window(start, end, allocation, incremental() ? &dirty : nullptr, kAlignment));
}

Result<std::vector<ExportRange>> NbdExport::all_ranges() {
    std::vector<ExportRange> out;
    while (true) {
        auto window = next_ranges();
        if (!window) return fail(window.error());
        if (!*window) return out;
        for (const auto& r : **window) append_merged(out, r);
    }
}

Status NbdExport::read(const std::vector<ExportRange>& ranges, const Sink& sink,
                       const ReadOptions& read_options) {
    // Buffers of our own, reused: each piece is lent to the sink and comes back.
    std::vector<Buffer> spare;
    auto acquire = [&spare](std::size_t bytes) {
        Buffer b;
        if (!spare.empty()) {
            b = std::move(spare.back());
            spare.pop_back();
        }
        if (b.size() < bytes) b.resize(bytes);
        return b;
    };
    auto take = [&](std::uint64_t offset, Buffer data, std::size_t length) -> Status {
        auto st = sink(offset, std::as_bytes(std::span<const std::uint8_t>(data.data(), length)));
        spare.push_back(std::move(data));
        return st;
    };
    return read_pieces(ranges, acquire, take, read_options);
}

Status NbdExport::read_into(const std::vector<ExportRange>& ranges, const Acquire& acquire,
                            const Take& take, const ReadOptions& read_options) {
    return read_pieces(
        ranges, acquire,
        [&take](std::uint64_t offset, Buffer data, std::size_t length) -> Status {
            data.resize(length);
            return take(offset, std::move(data));
        },
        read_options);
}

Status NbdExport::read_pieces(const std::vector<ExportRange>& ranges, const Acquire& acquire,
                              const std::function<Status(std::uint64_t, Buffer, std::size_t)>& take,
                              const ReadOptions& read_options) {
    std::uint64_t request = std::min<std::uint64_t>(read_options.request_bytes, max_request_);
    request = std::max(kAlignment, align_down(request, kAlignment));
    unsigned in_flight = std::max(1u, read_options.in_flight);

    struct Slot {
        Buffer buffer;
        std::uint64_t offset = 0;
        std::size_t length = 0;
        int64_t cookie = 0;
    };
    std::vector<Slot> slots(in_flight);
    std::vector<Slot*> free_slots;
    for (auto& s : slots) free_slots.push_back(&s);
    std::deque<Slot*> queue;  // issued, in offset order

    nbd_handle* h = handle_.get();
    std::size_t range = 0;
    std::uint64_t next = ranges.empty() ? 0 : ranges[0].offset;
    auto advance = [&]() -> bool {  // positions `range`/`next` on the next data byte
        while (range < ranges.size()) {
            const auto& r = ranges[range];
            if (r.kind == ExportRange::Kind::data && next < r.end()) {
                next = std::max(next, r.offset);
                return true;
            }
            ++range;
            if (range < ranges.size()) next = ranges[range].offset;
        }
        return false;
    };
    // Waits for every issued request: their buffers must outlive them.
    auto drain = [&]() {
        for (Slot* s : queue) {
            while (nbd_aio_command_completed(h, s->cookie) == 0) {
                if (nbd_poll(h, -1) < 0) break;
            }
        }
        queue.clear();
    };

    Status result;
    while (result) {
        while (!free_slots.empty() && advance()) {
            Slot* s = free_slots.back();
            const auto& r = ranges[range];
            s->offset = next;
            s->length = static_cast<std::size_t>(std::min(request, r.end() - next));
            s->buffer = acquire(s->length);
            if (s->buffer.size() < s->length) {
                result = fail(ErrorKind::internal,
                              options_.label + ": read buffer smaller than the request");
                break;
            }
            s->cookie =
                nbd_aio_pread(h, s->buffer.data(), s->length, s->offset, NBD_NULL_COMPLETION, 0);
            if (s->cookie < 0) {
                result =
                    fail(ErrorKind::io, options_.label + ": NBD read at " +
                                            std::to_string(s->offset) + ": " + nbd_error_text());
                break;
            }
            free_slots.pop_back();
            queue.push_back(s);
            next += s->length;
        }
        if (!result || queue.empty()) break;
        Slot* front = queue.front();
        int done = 0;
        while ((done = nbd_aio_command_completed(h, front->cookie)) == 0) {
            if (nbd_poll(h, -1) < 0) {
                done = -1;
                break;
            }
        }
        if (done < 0) {
            result =
                fail(ErrorKind::io, options_.label + ": NBD read of " +
                                        std::to_string(front->length) + " bytes at " +
                                        std::to_string(front->offset) + ": " + nbd_error_text());
            queue.pop_front();
            break;
        }
        queue.pop_front();
        result = take(front->offset, std::move(front->buffer), front->length);
        front->buffer = Buffer();
        free_slots.push_back(front);
    }
    drain();
    return result;
}

}  // namespace vmshadow::virt
