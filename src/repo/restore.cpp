// SPDX-License-Identifier: MIT
#include "repo/restore.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/work_queue.h"
#include "repo/chunk_map.h"
#include "repo/restore_plan.h"

namespace vmshadow::repo {
namespace {

class MemorySink final : public DiskSink {
  public:
    explicit MemorySink(std::uint64_t size) : data_(size) {}
    Status write(std::uint64_t offset, ByteView data) override {
        std::memcpy(data_.data() + offset, data.data(), data.size());
        return {};
    }
    Bytes take() { return std::move(data_); }

  private:
    Bytes data_;
};

// Chunks a window holds before its reads are planned: the first kFirstWindowChunks, each next
// one twice the last, up to 4 GiB of a disk at 64 KiB chunks (about 3 MiB of plan). Window
// bounds are multiples of every frame size, so a full backup's frames never straddle two of
// them (a frame in two windows would be read twice).
constexpr std::size_t kWindowChunks = 65536;
constexpr std::size_t kFirstWindowChunks = 4096;
// Largest span one read covers, and the most unneeded stored bytes (another point's frames,
// the map's blocks) it may carry between two needed frames: on object storage a round trip
// costs the gateway more than carrying a megabyte; on a local disk a small gap is cheaper to
// copy than to split the writes around it.
constexpr std::uint64_t kMaxSpan = 8u << 20;
constexpr std::uint64_t kMaxGapRemote = 1u << 20;
constexpr std::uint64_t kMaxGapLocal = 256u << 10;

// A worker's buffers, reused from task to task: no allocation or zero-fill per frame.
struct WorkerBuffers {
    Bytes span;
    Codec::Buffers frame;
    Bytes aside;  // WriteGatherer's
};

// Gathers the verified chunks of a task into writes of up to `limit` bytes, so a sink behind
// a protocol (qemu-nbd writing qcow2) sees few large requests. A write stays a view of its
// decoded frame while it can (no copy); when the frame's buffer is about to be reused, a short
// pending write is copied aside to grow with the next frame's chunks and a long one is
// written. Writes at the disk's neighbouring offsets are merged, nothing else.
class WriteGatherer {
  public:
    WriteGatherer(DiskSink& sink, std::uint64_t limit, Bytes& aside,
                  std::atomic<std::uint64_t>& written)
        : sink_(sink), limit_(limit), aside_(aside), written_(written) {}

    Status add(std::uint64_t offset, ByteView data) {
        if (size_ > 0 && offset == start_ + size_ && size_ + data.size() <= limit_) {
            if (!copied_ && data.data() == view_ + size_) {
                size_ += data.size();
                return {};
            }
            copy_aside();
            std::memcpy(at_least(aside_, size_ + data.size()).data() + size_, data.data(),
                        data.size());
            size_ += data.size();
            return {};
        }
        if (auto st = flush(); !st) return st;
        start_ = offset;
        view_ = data.data();
        size_ = data.size();
        return {};
    }

    // The current frame's buffer is about to be reused.
    Status frame_done() {
        if (size_ == 0 || copied_) return {};
        if (size_ >= kWriteDirect) return flush();
        copy_aside();
        return {};
    }

    Status flush() {
        if (size_ == 0) return {};
        ByteView data(copied_ ? aside_.data() : view_, size_);
        Status st = sink_.write(start_, data);
        if (st) written_ += size_;
        size_ = 0;
        copied_ = false;
        return st;
    }

  private:
    // A pending write this long is written when its frame ends rather than copied aside.
    static constexpr std::uint64_t kWriteDirect = 256u << 10;

    void copy_aside() {
        if (copied_) return;
        std::memcpy(at_least(aside_, size_).data(), view_, size_);
        copied_ = true;
    }

    DiskSink& sink_;
    const std::uint64_t limit_;
    Bytes& aside_;
    std::atomic<std::uint64_t>& written_;
    std::uint64_t start_ = 0, size_ = 0;
    const std::uint8_t* view_ = nullptr;
    bool copied_ = false;
};

// What one worker runs: a task's reads, decodes, verification and writes.
class TaskRunner {
  public:
    TaskRunner(const Repository& repo, std::uint64_t size, DiskSink& sink,
               std::uint64_t write_limit, std::atomic<std::uint64_t>& written)
        : repo_(repo),
          cs_(repo.config().chunk_size),
          size_(size),
          sink_(sink),
          write_limit_(write_limit),
          written_(written) {}

    // Reads the task's span of its pack in one read, then decodes each frame and gives its
    // chunks, each verified against its id first, to a WriteGatherer.
    Status run(const ReadTask& t, WorkerBuffers& b) const {
        auto span = at_least(b.span, t.end - t.begin);
        if (auto st = repo_.read_pack_range(*t.pack, t.begin, span); !st) return st;
        WriteGatherer writes(sink_, write_limit_, b.aside, written_);
        for (const FrameRead& f : t.frames) {
            ByteView stored(span.data() + (f.entry.offset - t.begin), f.entry.length);
            Status st = run_frame(f, stored, b, writes);
            if (st) st = writes.frame_done();
            if (!st)
                return std::unexpected(
                    st.error().with_context("chunk " + f.uses.front().id.short_hex() + " in pack " +
                                            repo_.pack_file_path(*t.pack)));
        }
        return writes.flush();
    }

  private:
    Status run_frame(const FrameRead& f, ByteView stored, WorkerBuffers& b,
                     WriteGatherer& writes) const {
        const BlobEntry& e = f.entry;
        if (!entry_is_sane(e)) return fail(ErrorKind::corruption, "blob entry is damaged");
        // A blob stored alone is verified by decode_into; a frame's blobs one by one below.
        auto plain = repo_.codec().decode_into(e.framed ? nullptr : &e.id, stored, e.compressed,
                                               e.framed ? e.frame_length : e.raw_length, b.frame);
        if (!plain) return std::unexpected(plain.error());
        for (const ChunkUse& u : f.uses) {
            if (auto st = check(e, u, *plain); !st) return st;
            if (auto st = writes.add(u.chunk * cs_, plain->subspan(u.frame_offset, u.length)); !st)
                return st;
        }
        return {};
    }

    // The chunk lies inside the frame, has the length its place on the disk needs, and its
    // content matches its id.
    Status check(const BlobEntry& e, const ChunkUse& u, ByteView plain) const {
        if (u.frame_offset > plain.size() || u.length > plain.size() - u.frame_offset)
            return fail(ErrorKind::corruption, "blob lies outside its frame (damaged entry)");
        std::uint64_t expected = std::min<std::uint64_t>(cs_, size_ - u.chunk * cs_);
        if (u.length != expected)
            return fail(ErrorKind::corruption, "chunk " + u.id.short_hex() + " has " +
                                                   std::to_string(u.length) + " bytes, expected " +
                                                   std::to_string(expected));
        if (!e.framed) return {};
        return repo_.codec().verify(u.id, plain.subspan(u.frame_offset, u.length));
    }

    const Repository& repo_;
    const std::uint64_t cs_, size_;
    DiskSink& sink_;
    const std::uint64_t write_limit_;
    std::atomic<std::uint64_t>& written_;
};

// The chunk map's level-0 blocks of a window, read ahead in parallel: on object storage each
// is a round trip of its own (they lie among the data in many packs), and the walk would
// otherwise wait for them one by one. Blocks not fetched (or that failed) are read by the
// walk as usual, which reports any error.
class LeafPrefetch final : public BlobSource {
  public:
    LeafPrefetch(const Repository& repo, unsigned threads) : repo_(repo), threads_(threads) {}

    bool enabled() const { return threads_ > 1; }

    Result<Bytes> read_blob(const Hash256& id) const override {
        auto it = blocks_.find(id);
        if (it != blocks_.end()) return it->second;
        return repo_.read_blob(id);
    }

    // Replaces the blocks held with `ids`' (the caller's thread, between walks).
    void fetch(const std::vector<Hash256>& ids) {
        blocks_.clear();
        std::vector<std::optional<Bytes>> got(ids.size());
        std::atomic<std::size_t> next{0};
        auto body = [&] {
            for (std::size_t i; (i = next++) < ids.size();)
                if (auto b = repo_.read_blob(ids[i])) got[i] = std::move(*b);
        };
        std::vector<std::jthread> threads;
        // A thread that cannot start only means fewer in flight: the walk reads the rest.
        (void)start_threads(threads, std::min<unsigned>(threads_, ids.size()), body);
        threads.clear();  // joins
        for (std::size_t i = 0; i < ids.size(); ++i)
            if (got[i]) blocks_.emplace(ids[i], std::move(*got[i]));
    }

  private:
    const Repository& repo_;
    const unsigned threads_;
    std::unordered_map<Hash256, Bytes, Hash256Hasher> blocks_;
};

// The map walk (the caller's thread): holes are given to the sink's zero() in offset order;
// data chunks are gathered a window at a time, planned (restore_plan.h) and each read task
// handed to `emit`. The cancel token is checked at every chunk and the progress reported
// at every task.
class PlannedWalk {
  public:
    PlannedWalk(const Repository& repo, ChunkMap& chunks, LeafPrefetch& leaf_prefetch,
                std::uint64_t size, DiskSink& sink, const ReadOptions& options,
                const std::atomic<std::uint64_t>& written)
        : repo_(repo),
          chunks_(chunks),
          leaf_prefetch_(leaf_prefetch),
          cs_(repo.config().chunk_size),
          size_(size),
          sink_(sink),
          options_(options),
          written_(written) {
        limits_.max_span = kMaxSpan;
        limits_.max_gap = repo.env().read_concurrency() > 1 ? kMaxGapRemote : kMaxGapLocal;
    }

    Status run(const std::function<Status(ReadTask)>& emit) {
        const std::uint64_t leaves = chunks_.leaf_count();
        const std::uint64_t fanout = std::max<std::uint64_t>(1, repo_.config().map_fanout);
        const std::uint64_t max_window = std::max<std::uint64_t>(1, kWindowChunks / fanout);
        // Windows start at 256 MiB of disk (at 64 KiB chunks: 8 map blocks, read in one
        // parallel round) and double: the workers get their first tasks after that round
        // instead of a whole window's, and the walk reads the next window's blocks while
        // they work.
        std::uint64_t window =
            std::clamp<std::uint64_t>(kFirstWindowChunks / fanout, 1, max_window);
        for (std::uint64_t first = 0; first < leaves;
             first += window, window = std::min(2 * window, max_window)) {
            if (leaf_prefetch_.enabled()) {
                std::vector<Hash256> ids;
                for (std::uint64_t b = first; b < std::min(leaves, first + window); ++b) {
                    auto id = chunks_.entry(1, b);
                    if (!id) return std::unexpected(id.error());
                    if (!id->is_zero()) ids.push_back(*id);
                }
                leaf_prefetch_.fetch(ids);
            }
            Status st = chunks_.for_each_chunk(
                first, window, [&](std::uint64_t index, const Hash256& id) -> Status {
                    if (options_.cancel)
                        if (auto c = options_.cancel->check("restore"); !c) return c;
                    if (auto z = zero_until(index); !z) return z;
                    window_.emplace_back(index, id);
                    return {};
                });
            if (st) st = flush(emit);
            if (!st) return st;
        }
        return zero_until(chunks_.chunk_count());
    }

    void report() const {
        if (options_.progress)
            options_.progress(std::min<std::uint64_t>(zeroed_ + written_.load(), size_), size_);
    }

  private:
    Status flush(const std::function<Status(ReadTask)>& emit) {
        if (window_.empty()) return {};
        auto tasks = plan_reads(repo_.index(), window_, limits_);
        window_.clear();
        if (!tasks) return std::unexpected(tasks.error());
        for (auto& t : *tasks) {
            if (auto e = emit(std::move(t)); !e) return e;
            report();
        }
        return {};
    }

    // Zeros from after the last data chunk walked up to chunk `index`.
    Status zero_until(std::uint64_t index) {
        std::uint64_t from = next_index_ * cs_, to = std::min<std::uint64_t>(index * cs_, size_);
        next_index_ = index + 1;
        if (to <= from) return {};
        zeroed_ += to - from;
        return sink_.zero(from, to - from);
    }

    const Repository& repo_;
    ChunkMap& chunks_;
    LeafPrefetch& leaf_prefetch_;
    const std::uint64_t cs_, size_;
    DiskSink& sink_;
    const ReadOptions& options_;
    const std::atomic<std::uint64_t>& written_;
    PlanLimits limits_;
    std::vector<std::pair<std::uint64_t, Hash256>> window_;
    std::uint64_t next_index_ = 0;  // the chunk after the last data chunk walked
    std::uint64_t zeroed_ = 0;      // hole bytes given to the sink
};

// `options.workers` workers take the walk's tasks from a bounded queue; the first error (or
// a cancellation a worker sees) stops both.
Status restore_in_parallel(const ReadOptions& options, PlannedWalk& walk,
                           const TaskRunner& runner) {
    std::mutex error_mu;
    std::optional<Error> error;
    std::vector<WorkerBuffers> buffers(options.workers);
    WorkQueue<ReadTask> queue(2 * options.workers, WorkQueue<ReadTask>::Release::taken,
                              [](const ReadTask&) { return std::uint64_t{1}; });
    auto work = [&](ReadTask& t, unsigned worker) {
        Status st = options.cancel ? options.cancel->check("restore") : Status{};
        if (st) st = runner.run(t, buffers[worker]);
        if (!st) {
            std::lock_guard lock(error_mu);
            if (!error) error = st.error();
            queue.abort();
        }
    };
    // A thread that cannot be created fails the restore; those started are stopped below.
    Status started = queue.start(options.workers, work);
    Status walked = !started ? started : walk.run([&](ReadTask t) -> Status {
        if (queue.push(std::move(t))) return {};
        std::lock_guard lock(error_mu);
        return std::unexpected(*error);
    });
    if (!walked) queue.abort();  // a cancelled or failed walk: drop what waits
    queue.finish();
    if (error) return std::unexpected(*error);
    return walked;
}

}  // namespace

Status restore_object(const Repository& repo, const MapRef& map, std::uint64_t size, DiskSink& sink,
                      const ReadOptions& options) {
    if (options.workers > kMaxWorkers)
        return fail(ErrorKind::invalid_argument,
                    "a restore runs 0.." + std::to_string(kMaxWorkers) + " workers, not " +
                        std::to_string(options.workers));
    LeafPrefetch leaf_prefetch(repo, repo.env().read_concurrency());
    ChunkMap chunks(leaf_prefetch, map, size, repo.config().chunk_size, repo.config().map_fanout);
    std::uint64_t cs = repo.config().chunk_size;
    std::uint64_t write_limit = std::max<std::uint64_t>(cs, options.max_write / cs * cs);
    std::atomic<std::uint64_t> written{0};
    TaskRunner runner(repo, size, sink, write_limit, written);
    PlannedWalk walk(repo, chunks, leaf_prefetch, size, sink, options, written);
    Status st;
    if (options.workers == 0) {
        WorkerBuffers buffers;
        st = walk.run([&](ReadTask t) { return runner.run(t, buffers); });
    } else {
        st = restore_in_parallel(options, walk, runner);
    }
    if (st) walk.report();
    return st;
}

Result<Bytes> read_file_record(const Repository& repo, const FileRecord& file) {
    MemorySink sink(file.size);
    if (auto st = restore_object(repo, file.map, file.size, sink); !st)
        return std::unexpected(st.error().with_context("file " + file.name));
    return sink.take();
}

}  // namespace vmshadow::repo
