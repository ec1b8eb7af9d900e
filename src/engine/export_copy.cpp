// SPDX-License-Identifier: MIT
#include "engine/export_copy.h"

#include <algorithm>

namespace vmshadow::engine {
namespace {

void append(std::vector<CopyOp>& ops, std::uint64_t offset, std::uint64_t length,
            CopyOp::Kind kind) {
    if (!ops.empty() && ops.back().kind == kind &&
        ops.back().offset + ops.back().length == offset) {
        ops.back().length += length;
    } else {
        ops.push_back({offset, length, kind});
    }
}

}  // namespace

ChunkClassifier::ChunkClassifier(std::uint64_t disk_size, std::uint64_t chunk_size,
                                 bool incremental)
    : size_(disk_size), chunk_(chunk_size), incremental_(incremental) {}

std::vector<CopyOp> ChunkClassifier::feed(std::uint64_t start, std::uint64_t end,
                                          const std::vector<virt::ExportRange>& ranges) {
    std::vector<CopyOp> ops;
    if (end <= start) return ops;
    std::size_t next = 0;
    for (std::uint64_t c = start / chunk_; c * chunk_ < end; ++c) {
        const std::uint64_t cb = c * chunk_;
        const std::uint64_t ce = std::min(size_, cb + chunk_);
        const std::uint64_t lo = std::max(cb, start), hi = std::min(ce, end);
        std::uint64_t data = 0, zero = 0;
        if (c == carry_chunk_) {
            data = carry_data_;
            zero = carry_zero_;
            carry_chunk_ = UINT64_MAX;
        }
        while (next < ranges.size() && ranges[next].end() <= lo) ++next;
        for (std::size_t j = next; j < ranges.size() && ranges[j].offset < hi; ++j) {
            std::uint64_t overlap = std::min(hi, ranges[j].end()) - std::max(lo, ranges[j].offset);
            (ranges[j].kind == virt::ExportRange::Kind::data ? data : zero) += overlap;
        }
        if (ce > end) {  // finished by a later window
            carry_chunk_ = c;
            carry_data_ = data;
            carry_zero_ = zero;
            break;
        }
        const std::uint64_t len = ce - cb;
        CopyOp::Kind kind;
        if (data > 0) {
            kind = CopyOp::Kind::data;
        } else if (zero == len || !incremental_) {
            kind = CopyOp::Kind::zero;  // a full read yields every byte: no data = zeros
        } else if (zero == 0) {
            kind = CopyOp::Kind::unchanged;
        } else {
            kind = CopyOp::Kind::data;  // part zeroed, part untouched: read the chunk
        }
        append(ops, cb, len, kind);
    }
    return ops;
}

Result<std::uint64_t> copy_export(virt::NbdExport& source, repo::DiskWriter& disk,
                                  const CopyControl& control) {
    if (disk.size() != source.size()) {
        return fail(ErrorKind::internal, "export size " + std::to_string(source.size()) +
                                             " differs from the disk's " +
                                             std::to_string(disk.size()));
    }
    const std::uint64_t cs = disk.chunk_size();
    ChunkClassifier classifier(source.size(), cs, source.incremental());
    virt::NbdExport::ReadOptions read_options;
    read_options.request_bytes = std::max<std::uint64_t>(cs, (4ull << 20) / cs * cs);
    read_options.in_flight = control.in_flight;
    std::uint64_t bytes_read = 0;
    std::uint64_t start = 0;
    while (true) {
        auto window = source.next_ranges();
        if (!window) return std::unexpected(window.error());
        if (!*window) break;
        const std::uint64_t end = source.walked();
        std::vector<CopyOp> ops = classifier.feed(start, end, **window);
        start = end;

        std::size_t issued = 0;  // ops[0, issued) handed to the DiskWriter
        auto issue_until = [&](std::uint64_t offset) -> Status {
            for (; issued < ops.size() && ops[issued].offset < offset; ++issued) {
                const CopyOp& op = ops[issued];
                Status st;
                if (op.kind == CopyOp::Kind::zero) st = disk.zero(op.offset, op.length);
                if (op.kind == CopyOp::Kind::unchanged) st = disk.unchanged(op.offset, op.length);
                if (!st) return st;
            }
            return {};
        };
        std::vector<virt::ExportRange> reads;
        for (const auto& op : ops)
            if (op.kind == CopyOp::Kind::data)
                reads.push_back({op.offset, op.length, virt::ExportRange::Kind::data});
        if (!reads.empty()) {
            // Each request reads straight into a buffer of the DiskWriter's pool, which the
            // write then takes over: no copy between the export and the repository.
            auto st = source.read_into(
                reads, [&disk](std::size_t bytes) { return disk.buffer(bytes); },
                [&](std::uint64_t offset, repo::Bytes data) -> Status {
                    if (control.check)
                        if (auto ok = control.check(); !ok) return ok;
                    if (auto st = issue_until(offset); !st) return st;
                    // Pieces start on chunk boundaries: ops[issued] is this data run.
                    if (issued < ops.size() && ops[issued].offset <= offset &&
                        ops[issued].kind == CopyOp::Kind::data)
                        ++issued;
                    bytes_read += data.size();
                    const std::uint64_t piece_end = offset + data.size();
                    if (auto st = disk.write(offset, std::move(data)); !st) return st;
                    // Within a window too: a window can span gigabytes of data.
                    if (control.progress) control.progress(piece_end);
                    return Status{};
                },
                read_options);
            if (!st) return std::unexpected(st.error());
        }
        if (auto st = issue_until(UINT64_MAX); !st) return std::unexpected(st.error());
        if (control.check)
            if (auto ok = control.check(); !ok) return std::unexpected(ok.error());
        if (control.progress) control.progress(end);
    }
    return bytes_read;
}

}  // namespace vmshadow::engine
