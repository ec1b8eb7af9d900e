// SPDX-License-Identifier: MIT
#include "repo/restore.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <numeric>
#include <optional>
#include <utility>
#include <vector>

#include "common/work_queue.h"
#include "repo/chunk_map.h"

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

// A run of consecutive data chunks: chunk `first` and the ones after it, one id each.
struct RunTask {
    std::uint64_t first = 0;
    std::vector<Hash256> ids;
};

// Fetches and verifies a run's chunks (read_blob checks each against its id) and writes them
// as one piece; `buffer` is the caller's reusable write buffer. A single chunk is written
// straight from its decoded blob.
Status restore_run(const Repository& repo, const RunTask& t, std::uint64_t size, DiskSink& sink,
                   Bytes& buffer) {
    std::uint64_t cs = repo.config().chunk_size;
    std::uint64_t offset = t.first * cs;
    std::uint64_t total = std::min<std::uint64_t>(t.ids.size() * cs, size - offset);
    if (t.ids.size() > 1 && buffer.size() < total) buffer.resize(total);
    std::uint64_t at = 0;
    for (std::size_t i = 0; i < t.ids.size(); ++i) {
        std::uint64_t expected = std::min<std::uint64_t>(cs, size - offset - at);
        auto data = repo.read_blob(t.ids[i]);
        if (!data) return std::unexpected(data.error());
        if (data->size() != expected)
            return fail(ErrorKind::corruption, "chunk " + t.ids[i].short_hex() + " has " +
                                                   std::to_string(data->size()) +
                                                   " bytes, expected " + std::to_string(expected));
        if (t.ids.size() == 1) return sink.write(offset, *data);
        std::memcpy(buffer.data() + at, data->data(), data->size());
        at += expected;
    }
    return sink.write(offset, ByteView(buffer.data(), total));
}

// Writes a task (one worker's share) in pieces of up to `run_chunks` chunks.
Status restore_task(const Repository& repo, const RunTask& t, std::uint64_t size, DiskSink& sink,
                    Bytes& buffer, std::size_t run_chunks) {
    // A task is whole frames, mostly neighbours in one pack: read them in one go.
    repo.prefetch(t.ids);
    if (t.ids.size() <= run_chunks) return restore_run(repo, t, size, sink, buffer);
    for (std::size_t k = 0; k < t.ids.size(); k += run_chunks) {
        RunTask piece;
        piece.first = t.first + k;
        piece.ids.assign(t.ids.begin() + k, t.ids.begin() + std::min(t.ids.size(), k + run_chunks));
        if (auto st = restore_run(repo, piece, size, sink, buffer); !st) return st;
    }
    return {};
}

// The map walk (the caller's thread): cuts the data chunks into tasks and hands each full
// one to `emit`; holes (written as zeros here) and task boundaries end a task. The cancel
// token is checked and the progress reported at every chunk.
class TaskWalk {
  public:
    TaskWalk(ChunkMap& chunks, std::uint64_t chunk_size, std::uint64_t size,
             std::size_t task_chunks, DiskSink& sink, const ReadOptions& options)
        : chunks_(chunks),
          cs_(chunk_size),
          size_(size),
          task_chunks_(task_chunks),
          sink_(sink),
          options_(options) {}

    Status run(const std::function<Status(RunTask)>& emit) {
        Status st = chunks_.for_each_chunk([&](std::uint64_t index, const Hash256& id) -> Status {
            if (options_.cancel)
                if (auto c = options_.cancel->check("restore"); !c) return c;
            if (auto z = zero_until(index); !z) return z;
            if (!run_.ids.empty() &&
                (index != run_.first + run_.ids.size() || index % task_chunks_ == 0)) {
                if (auto e = emit(std::exchange(run_, RunTask{})); !e) return e;
            }
            if (run_.ids.empty()) run_.first = index;
            run_.ids.push_back(id);
            report(index);
            return {};
        });
        if (st && !run_.ids.empty()) st = emit(std::exchange(run_, RunTask{}));
        if (st) st = zero_until(chunks_.chunk_count());
        return st;
    }

    // Progress up to chunk `chunk` (the chunk count: all of it).
    void report(std::uint64_t chunk) const {
        if (options_.progress)
            options_.progress(std::min<std::uint64_t>(chunk * cs_, size_), size_);
    }

  private:
    // Zeros from after the last data chunk walked up to chunk `index`.
    Status zero_until(std::uint64_t index) {
        std::uint64_t from = next_index_ * cs_, to = std::min<std::uint64_t>(index * cs_, size_);
        next_index_ = index + 1;
        return to > from ? sink_.zero(from, to - from) : Status{};
    }

    ChunkMap& chunks_;
    const std::uint64_t cs_, size_;
    const std::size_t task_chunks_;
    DiskSink& sink_;
    const ReadOptions& options_;
    RunTask run_;
    std::uint64_t next_index_ = 0;  // the chunk after the last data chunk walked
};

// `options.workers` workers take the walk's tasks from a bounded queue; the first error
// stops both.
Status restore_in_parallel(const Repository& repo, std::uint64_t size, DiskSink& sink,
                           const ReadOptions& options, TaskWalk& walk, std::size_t run_chunks,
                           std::size_t task_chunks) {
    std::mutex error_mu;
    std::optional<Error> error;
    std::vector<Bytes> buffers(options.workers);
    WorkQueue<RunTask> queue(std::max<std::size_t>(256, 2 * task_chunks),
                             WorkQueue<RunTask>::Release::taken,
                             [](const RunTask& t) { return std::uint64_t{t.ids.size()}; });
    auto work = [&](RunTask& t, unsigned worker) {
        if (Status st = restore_task(repo, t, size, sink, buffers[worker], run_chunks); !st) {
            std::lock_guard lock(error_mu);
            if (!error) error = st.error();
            queue.abort();
        }
    };
    // A thread that cannot be created fails the restore; those started are stopped below.
    Status started = queue.start(options.workers, work);
    Status walked = !started ? started : walk.run([&](RunTask t) -> Status {
        if (queue.push(std::move(t))) return {};
        std::lock_guard lock(error_mu);
        return std::unexpected(*error);
    });
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
    ChunkMap chunks(repo, map, size, repo.config().chunk_size, repo.config().map_fanout);
    std::uint64_t cs = repo.config().chunk_size;
    const std::size_t run_chunks = std::max<std::size_t>(1, options.max_write / cs);
    // A task (one worker's share) is an aligned group of whole frames and whole writes: the
    // frames were cut on the same boundaries (backup_session.cpp), so no two workers decode
    // the same frame.
    std::size_t task_chunks =
        std::lcm<std::size_t>(run_chunks, std::max<std::size_t>(1, repo.frame_chunks()));
    // On object storage a task spans several frames, so Repository::prefetch reads them in
    // one request: there a read costs a round trip, not the bytes it carries.
    if (repo.env().read_concurrency() > 1 && repo.frame_chunks() > 1)
        task_chunks *= std::max<std::size_t>(
            1, Repository::kPrefetchFrames * repo.frame_chunks() / task_chunks);
    TaskWalk walk(chunks, cs, size, task_chunks, sink, options);
    Status st;
    if (options.workers == 0) {
        Bytes buffer;
        st = walk.run(
            [&](RunTask t) { return restore_task(repo, t, size, sink, buffer, run_chunks); });
    } else {
        st = restore_in_parallel(repo, size, sink, options, walk, run_chunks, task_chunks);
    }
    if (st) walk.report(chunks.chunk_count());
    return st;
}

Result<Bytes> read_file_record(const Repository& repo, const FileRecord& file) {
    MemorySink sink(file.size);
    if (auto st = restore_object(repo, file.map, file.size, sink); !st)
        return std::unexpected(st.error().with_context("file " + file.name));
    return sink.take();
}

}  // namespace vmshadow::repo
