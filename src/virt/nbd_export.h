// SPDX-License-Identifier: MIT
#pragma once
// NbdExport: a reader of one libvirt pull-mode backup export (QEMU's NBD server on the
// job's Unix socket) with libnbd — what the copy step of a live backup reads.
//
// This module is:
//   - connecting by export name (the disk target) with the meta contexts `base:allocation`
//     and, for an incremental disk, `qemu:dirty-bitmap:<export bitmap>`; an incremental whose
//     dirty-bitmap context the server did not negotiate fails (never a silent full);
//   - the extent walk (TECH-REFERENCE §4.5): block status in windows of at most 1 GiB
//     (libnbd 1.14 has no 64-bit block status: < 4 GiB per request), continuing from where
//     the shortest context's reply ended, clamped to the window and the export size;
//     yielding ranges of kind `data` (read it) or `zero` (reads as zeros: record, don't
//     read). Full: every byte of the disk, data where not ZERO. Incremental: dirty bytes only,
//     dirty ∩ data → data, dirty ∩ (hole|zero) → zero; clean bytes are not yielded.
//     Data ranges are widened to `alignment` (64 KiB, the qcow2 cluster) and clamped to the
//     size; a zero range never overlaps a data range.
//   - parallel reads: libnbd AIO on one connection, `in_flight` requests of at most
//     `request_bytes` (≤ the server's maximum block size, 32 MiB on QEMU 7.2), delivered to
//     the caller in offset order — lent as a span (read), or read straight into buffers the
//     caller hands out and takes back (read_into: no copy on the way to the consumer).
// It is not: a reader of image files served by qemu-nbd (engine/nbd_image.h does that), nor
// storage of what it reads.
//
// Errors: `unavailable` (cannot connect, context missing), `io` (a failed request) with the
// export and offset in the message. Thread-safety: one thread per NbdExport; movable.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"

struct nbd_handle;

namespace vmshadow::virt {

struct ExportRange {
    enum class Kind { data, zero };
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    Kind kind = Kind::data;
    std::uint64_t end() const { return offset + length; }
    bool operator==(const ExportRange&) const = default;
};

// One block-status extent of one context, as the server reported it.
struct StatusExtent {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::uint32_t flags = 0;
};

// The pure part of the walk, for one window [start, end): classifies the extents of
// base:allocation (and, for an incremental, of the dirty bitmap) into ranges; merges
// neighbours of one kind; widens data to `alignment` within [start, end). Both extent lists
// must cover [start, end) from `start` without gaps (the caller clamps them).
std::vector<ExportRange> classify_window(std::uint64_t start, std::uint64_t end,
                                         const std::vector<StatusExtent>& allocation,
                                         const std::vector<StatusExtent>* dirty,
                                         std::uint64_t alignment);

struct NbdHandleClose {
    void operator()(nbd_handle* h) const;
};
using NbdHandle = std::unique_ptr<nbd_handle, NbdHandleClose>;

class NbdExport {
  public:
    struct Options {
        std::string socket;         // the job's Unix socket
        std::string export_name;    // the disk target, as BackupExport::export_name
        std::string dirty_context;  // "qemu:dirty-bitmap:backup-vda"; empty for a full read
        std::string label;          // "vm 'web1', disk vda" for messages
    };
    static Result<NbdExport> connect(const Options& options);

    std::uint64_t size() const { return size_; }
    std::uint64_t max_request() const { return max_request_; }
    bool can_multi_conn() const { return multi_conn_; }
    bool incremental() const { return !options_.dirty_context.empty(); }

    // The next window's ranges (possibly none: a clean window of an incremental); nullopt
    // once the whole export was walked.
    Result<std::optional<std::vector<ExportRange>>> next_ranges();
    // Where the walk stands: the end of the window next_ranges() returned last.
    std::uint64_t walked() const { return walked_; }
    // All ranges of the export (walks every window).
    Result<std::vector<ExportRange>> all_ranges();

    struct ReadOptions {
        std::size_t request_bytes = 4u << 20;  // clamped to max_request(), multiple of 64 KiB
        unsigned in_flight = 8;
    };
    using Sink = std::function<Status(std::uint64_t offset, std::span<const std::byte> data)>;
    // Reads the data ranges (zero ranges are skipped), `in_flight` requests at a time, and
    // hands each piece to `sink` in offset order. Stops at the first error (the sink's too).
    Status read(const std::vector<ExportRange>& ranges, const Sink& sink,
                const ReadOptions& read_options);
    Status read(const std::vector<ExportRange>& ranges, const Sink& sink) {
        return read(ranges, sink, ReadOptions{});
    }

    // The same reads, each into a buffer from `acquire(bytes)` (at least `bytes` long; it
    // is shrunk to the piece) that `take` then owns: the data is never copied here.
    using Buffer = std::vector<std::uint8_t>;
    using Acquire = std::function<Buffer(std::size_t bytes)>;
    using Take = std::function<Status(std::uint64_t offset, Buffer data)>;
    Status read_into(const std::vector<ExportRange>& ranges, const Acquire& acquire,
                     const Take& take, const ReadOptions& read_options);

    static constexpr std::uint64_t kAlignment = 64 * 1024;
    static constexpr std::uint64_t kWindow = 1ull << 30;

  private:
    Status read_pieces(const std::vector<ExportRange>& ranges, const Acquire& acquire,
                       const std::function<Status(std::uint64_t, Buffer, std::size_t)>& take,
                       const ReadOptions& read_options);
    NbdExport(Options options, NbdHandle handle)
        : options_(std::move(options)), handle_(std::move(handle)) {}

    Options options_;
    NbdHandle handle_;
    std::uint64_t size_ = 0;
    std::uint64_t max_request_ = 32u << 20;
    bool multi_conn_ = false;
    bool allocation_ = false;
    std::uint64_t walked_ = 0;
};

}  // namespace vmshadow::virt
