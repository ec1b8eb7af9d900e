// SPDX-License-Identifier: MIT
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stop_token>
#include <system_error>
#include <thread>
#include <vector>

#include "engine/image_jobs.h"
#include "engine/nbd_image.h"
#include "repo/restore.h"

namespace vmshadow::engine {
namespace {

class FileSink final : public repo::DiskSink {
  public:
    FileSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
    ~FileSink() override {
        if (fd_ >= 0) ::close(fd_);
    }
    FileSink(const FileSink&) = delete;
    FileSink& operator=(const FileSink&) = delete;
    Status write(std::uint64_t offset, repo::ByteView data) override {
        std::size_t done = 0;
        while (done < data.size()) {
            ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done,
                                 static_cast<off_t>(offset + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                return fail(ErrorKind::io, "writing " + path_ + ": " + std::strerror(errno));
            done += static_cast<std::size_t>(n);
        }
        return {};
    }
    Status close() {
        int fd = std::exchange(fd_, -1);
        if (::fsync(fd) != 0 || ::close(fd) != 0)
            return fail(ErrorKind::io, "closing " + path_ + ": " + std::strerror(errno));
        return {};
    }

  private:
    int fd_;
    std::string path_;
};

// Writes through a pool of connections to one qemu-nbd, one request in flight on each: a
// worker takes a free connection, writes its run and gives it back. libnbd's synchronous
// calls hold the handle for the whole round trip, so one connection would serialise every
// write behind qemu-nbd's reply.
class NbdSink final : public repo::DiskSink {
  public:
    explicit NbdSink(std::vector<std::unique_ptr<NbdConnection>> connections)
        : connections_(std::move(connections)) {
        for (auto& c : connections_) free_.push_back(c.get());
    }
    Status write(std::uint64_t offset, repo::ByteView data) override {
        NbdConnection* c = nullptr;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [&] { return !free_.empty(); });
            c = free_.back();
            free_.pop_back();
        }
        Status st = c->pwrite(data.data(), data.size(), offset);
        {
            std::lock_guard lock(mu_);
            free_.push_back(c);
        }
        cv_.notify_one();
        return st;
    }
    // Every connection flushes: the server does not promise that a flush on one covers
    // writes that completed on another (no NBD multi-conn guarantee for writable exports).
    Status flush() {
        for (auto& c : connections_)
            if (auto st = c->flush(); !st) return st;
        return {};
    }

  private:
    std::vector<std::unique_ptr<NbdConnection>> connections_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<NbdConnection*> free_;
};

// Starts the kernel's writeback of the output while the restore still runs, so the final
// fsync (or qemu-nbd's flush) waits only for the last part. Without it the page cache holds
// the whole disk's data dirty until then: writeback starts by itself only at 10% of RAM or
// after 30 s. sync_file_range(WRITE) starts writeback and does not wait for it; it may block
// while the device's queue is full, which is why it runs on its own thread.
class WritebackBehind {
  public:
    explicit WritebackBehind(const std::string& path)
        : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
        // Only a speed-up: without a thread (the thread limit is reached) the final fsync
        // does all the writeback.
        if (fd_ >= 0) try {
                thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
            } catch (const std::system_error&) {
            }
    }
    ~WritebackBehind() {
        if (thread_.joinable()) {
            thread_.request_stop();
            thread_.join();
        }
        if (fd_ >= 0) ::close(fd_);
    }
    WritebackBehind(const WritebackBehind&) = delete;
    WritebackBehind& operator=(const WritebackBehind&) = delete;

  private:
    void run(std::stop_token stop) {
        std::mutex mu;
        std::condition_variable_any cv;
        while (!stop.stop_requested()) {
            (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
            std::unique_lock lock(mu);
            cv.wait_for(lock, stop, std::chrono::milliseconds(100), [] { return false; });
        }
    }
    int fd_;
    std::jthread thread_;
};

// Removes the partial output unless disarmed.
struct PartialFile {
    std::string path;
    bool keep = false;
    ~PartialFile() {
        if (!keep) ::unlink(path.c_str());
    }
};

// qcow2 output: runs of up to 1 MiB per NBD write (qemu-nbd allocates one qcow2 cluster
// range per request instead of one per 64 KiB chunk).
constexpr std::size_t kNbdWrite = 1u << 20;

}  // namespace

Result<ImageRestoreResult> restore_image(repo::Repository& repo,
                                         const ImageRestoreOptions& options) {
    auto started = std::chrono::steady_clock::now();
    if (options.format != "raw" && options.format != "qcow2")
        return fail(ErrorKind::invalid_argument,
                    "--format must be raw or qcow2, not " + options.format);
    auto lock = repo.lock(repo::LockMode::shared, "image restore");
    if (!lock) return std::unexpected(lock.error());
    if (auto st = repo.load_index(); !st) return std::unexpected(st.error());
    auto listing = repo.list_points();
    if (!listing) return std::unexpected(listing.error());
    auto point = repo::Repository::resolve(*listing, options.point);
    if (!point) return std::unexpected(point.error());
    const repo::DiskRecord* disk = nullptr;
    if (options.disk.empty()) {
        if (point->disks.size() != 1) {
            std::string names;
            for (const auto& d : point->disks) names += (names.empty() ? "" : ", ") + d.name;
            return fail(ErrorKind::invalid_argument,
                        "restore point " + point->id.short_hex() + " has " +
                            std::to_string(point->disks.size()) + " disks (" + names +
                            "): choose one with --disk");
        }
        disk = &point->disks[0];
    } else {
        disk = point->disk(options.disk);
        if (!disk)
            return fail(ErrorKind::not_found,
                        "restore point " + point->id.short_hex() + " has no disk " + options.disk);
    }
    if (options.workers > repo::kMaxWorkers)
        return fail(ErrorKind::invalid_argument,
                    "--workers must be 1.." + std::to_string(repo::kMaxWorkers));
    if (std::filesystem::exists(options.output) && !options.force)
        return fail(ErrorKind::conflict,
                    options.output + " exists; choose another path or pass --force");
    PartialFile partial{options.output + ".vmshadow-partial"};
    ::unlink(partial.path.c_str());
    repo::ReadOptions ro;
    // Two threads per core by default: while one waits for its write (qemu-nbd's reply, or
    // pwrite into the page cache), the other decodes and verifies.
    ro.workers = options.workers ? options.workers
                                 : std::min(repo::kMaxWorkers, 2 * repo::default_workers());
    ro.progress = options.progress;
    std::string context = "restore point " + point->id.short_hex() + " disk " + disk->name;

    if (options.format == "raw") {
        int fd = ::open(partial.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            return fail(ErrorKind::io, "creating " + partial.path + ": " + std::strerror(errno));
        FileSink sink(fd, partial.path);
        // A sparse file of the disk's size; only chunks that hold data are written.
        if (::ftruncate(fd, static_cast<off_t>(disk->size)) != 0)
            return fail(ErrorKind::io, "sizing " + partial.path + ": " + std::strerror(errno));
        std::optional<WritebackBehind> behind(std::in_place, partial.path);
        if (auto st = repo::restore_object(repo, disk->map, disk->size, sink, ro); !st)
            return std::unexpected(st.error().with_context(context));
        behind.reset();
        if (auto st = sink.close(); !st) return std::unexpected(st.error());
    } else {
        if (auto st = create_image(partial.path, "qcow2", disk->size); !st)
            return std::unexpected(st.error());
        // One connection per worker: each holds one write in flight.
        ro.max_write = kNbdWrite;
        auto server = QemuNbdServer::start({partial.path, "qcow2", false, ro.workers});
        if (!server) return std::unexpected(server.error());
        {
            std::vector<std::unique_ptr<NbdConnection>> pool;
            for (unsigned i = 0; i < ro.workers; ++i) {
                auto nbd = NbdConnection::connect_unix((*server)->socket(), false);
                if (!nbd) return std::unexpected(nbd.error());
                pool.push_back(std::move(*nbd));
            }
            NbdSink sink(std::move(pool));
            std::optional<WritebackBehind> behind(std::in_place, partial.path);
            if (auto st = repo::restore_object(repo, disk->map, disk->size, sink, ro); !st)
                return std::unexpected(st.error().with_context(context));
            behind.reset();
            if (auto st = sink.flush(); !st) return std::unexpected(st.error());
        }
        if (auto st = (*server)->stop(); !st) return std::unexpected(st.error());
    }
    if (::rename(partial.path.c_str(), options.output.c_str()) != 0)
        return fail(ErrorKind::io, "renaming " + partial.path + " to " + options.output + ": " +
                                       std::strerror(errno));
    partial.keep = true;
    ImageRestoreResult result;
    result.point = *point;
    result.disk = disk->name;
    result.size = disk->size;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
}

}  // namespace vmshadow::engine
