// SPDX-License-Identifier: MIT
#pragma once
// Reading disks and files of a restore point back.
//
// This module is: streaming an object (a disk or a VM file) out of the repository into a
// DiskSink, chunk by chunk, each chunk verified against its id before it is written. Holes
// are not written (the sink is expected to start zeroed/sparse). It is not: opening targets
// (raw files, NBD exports) — the engine supplies sinks.
//
// Holes are given to the sink's zero(), which does nothing by default (a new sparse file
// or image reads as zeros); a sink whose target holds old data (a block device) zeroes them.
// They are given in offset order from the map walk, while workers write data elsewhere.
//
// Errors: a missing or damaged chunk stops the restore with a corruption error that names
// the chunk and pack; no unverified byte ever reaches the sink.
//
// Reads: the map is walked a window at a time (256 MiB of disk at 64 KiB chunks first, then
// doubling up to 4 GiB, so the first reads start at once); the window's
// data chunks are grouped by the pack and frame that store them (restore_plan.h), so each
// frame is read and decoded once, and a pack's neighbouring frames come in one read of up to
// 8 MiB (one ranged GET on object storage, where reads also carry gaps of up to 1 MiB). On
// object storage the window's map blocks are read ahead in parallel too.
//
// Writes: a frame's chunks are written straight from its decoded plaintext; runs of chunks
// that are neighbours on the disk become one write of up to `max_write` bytes (short runs of
// neighbouring frames are gathered), so a sink behind a protocol (qemu-nbd writing qcow2)
// sees few large requests. Writes come in pack order, roughly front to back of the disk.
//
// Threading: `workers` threads run the read tasks in parallel and call the sink
// concurrently (sinks must accept concurrent writes at distinct offsets, in any order);
// workers = 0 runs everything on the caller's thread. Memory is bounded: a window's plan
// (about 3 MiB), a queue of 2 tasks per worker, and per worker one read span (8 MiB, or one
// frame when larger), one decoded frame and one gathered write.

#include <cstdint>
#include <functional>

#include "common/error.h"
#include "common/task.h"
#include "repo/repository.h"

namespace vmshadow::repo {

class DiskSink {
  public:
    virtual ~DiskSink() = default;
    virtual Status write(std::uint64_t offset, ByteView data) = 0;
    // [offset, offset + length) is a hole: it must read as zeros.
    virtual Status zero(std::uint64_t /*offset*/, std::uint64_t /*length*/) { return {}; }
};

struct ReadOptions {
    unsigned workers = 0;
    // Largest single write given to the sink, in bytes (rounded down to whole chunks); a run
    // of consecutive data chunks up to this size is one write. 0: one write per chunk.
    std::size_t max_write = 0;
    // Called with (bytes done, total bytes) from the caller's thread.
    std::function<void(std::uint64_t, std::uint64_t)> progress;
    // Checked at every chunk of the map walk: a request stops the restore (workers drain)
    // with ErrorKind::cancelled; what the sink got so far is the caller's to discard.
    const CancelToken* cancel = nullptr;
};

Status restore_object(const Repository& repo, const MapRef& map, std::uint64_t size, DiskSink& sink,
                      const ReadOptions& options = {});

// Reads a whole VM file (domain XML, NVRAM…) into memory.
Result<Bytes> read_file_record(const Repository& repo, const FileRecord& file);

}  // namespace vmshadow::repo
