// SPDX-License-Identifier: MIT
#include "repo/restore.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

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

struct ChunkTask {
    std::uint64_t index;
    Hash256 id;
};

Status restore_chunk(const Repository& repo, const ChunkTask& t, std::uint64_t size,
                     DiskSink& sink) {
    std::uint64_t cs = repo.config().chunk_size;
    std::uint64_t offset = t.index * cs;
    std::uint64_t expected = std::min<std::uint64_t>(cs, size - offset);
    auto data = repo.read_blob(t.id);
    if (!data) return std::unexpected(data.error());
    if (data->size() != expected)
        return fail(ErrorKind::corruption, "chunk " + t.id.short_hex() + " has " +
                                               std::to_string(data->size()) + " bytes, expected " +
                                               std::to_string(expected));
    return sink.write(offset, *data);
}

}  // namespace

Status restore_object(const Repository& repo, const MapRef& map, std::uint64_t size, DiskSink& sink,
                      const ReadOptions& options) {
    ChunkMap chunks(repo, map, size, repo.config().chunk_size, repo.config().map_fanout);
    std::uint64_t cs = repo.config().chunk_size;
    auto report = [&](std::uint64_t chunk) {
        if (options.progress) options.progress(std::min<std::uint64_t>(chunk * cs, size), size);
    };
    if (options.workers == 0) {
        Status st = chunks.for_each_chunk([&](std::uint64_t index, const Hash256& id) -> Status {
            report(index);
            return restore_chunk(repo, ChunkTask{index, id}, size, sink);
        });
        if (st) report(chunks.chunk_count());
        return st;
    }

    // A bounded queue between the map walk (this thread) and the workers.
    std::mutex mu;
    std::condition_variable work_cv, space_cv;
    std::deque<ChunkTask> queue;
    bool done = false;
    std::optional<Error> error;
    const std::size_t capacity = 64;
    auto worker = [&] {
        for (;;) {
            ChunkTask t;
            {
                std::unique_lock lock(mu);
                work_cv.wait(lock, [&] { return done || !queue.empty(); });
                if (queue.empty()) return;
                t = queue.front();
                queue.pop_front();
            }
            space_cv.notify_one();
            Status st = restore_chunk(repo, t, size, sink);
            if (!st) {
                std::lock_guard lock(mu);
                if (!error) error = st.error();
            }
        }
    };
    std::vector<std::jthread> threads;
    for (unsigned i = 0; i < options.workers; ++i) threads.emplace_back(worker);
    Status walked = chunks.for_each_chunk([&](std::uint64_t index, const Hash256& id) -> Status {
        std::unique_lock lock(mu);
        space_cv.wait(lock, [&] { return queue.size() < capacity || error; });
        if (error) return std::unexpected(*error);
        queue.push_back(ChunkTask{index, id});
        lock.unlock();
        work_cv.notify_one();
        report(index);
        return {};
    });
    {
        std::lock_guard lock(mu);
        done = true;
    }
    work_cv.notify_all();
    threads.clear();  // joins
    if (!walked) return walked;
    if (error) return std::unexpected(*error);
    report(chunks.chunk_count());
    return {};
}

Result<Bytes> read_file_record(const Repository& repo, const FileRecord& file) {
    MemorySink sink(file.size);
    if (auto st = restore_object(repo, file.map, file.size, sink); !st)
        return std::unexpected(st.error().with_context("file " + file.name));
    return sink.take();
}

}  // namespace vmshadow::repo
