// SPDX-License-Identifier: MIT
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stop_token>
#include <system_error>
#include <thread>
#include <vector>

#include "common/os_error.h"
#include "engine/image_jobs.h"
#include "engine/nbd_image.h"
#include "engine/restore_target.h"
#include "repo/restore.h"

namespace vmshadow::engine {
namespace {

// A raw output: a new sparse file (holes are already zeros) or a block device (holes are
// zeroed: the device holds old data).
class FileSink final : public repo::DiskSink {
  public:
    FileSink(UniqueFd fd, std::string path, bool zero_holes)
        : fd_(fd.release()), path_(std::move(path)), zero_holes_(zero_holes) {}
    ~FileSink() override {
        if (fd_ >= 0) ::close(fd_);
    }
    FileSink(const FileSink&) = delete;
    FileSink& operator=(const FileSink&) = delete;
    Status zero(std::uint64_t offset, std::uint64_t length) override {
        return zero_holes_ ? zero_device_range(fd_, offset, length, path_) : Status{};
    }
    Status write(std::uint64_t offset, repo::ByteView data) override {
        std::size_t done = 0;
        while (done < data.size()) {
            ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done,
                                 static_cast<off_t>(offset + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail(os_error("writing " + path_, errno));
            done += static_cast<std::size_t>(n);
        }
        return {};
    }
    Status close() {
        int fd = std::exchange(fd_, -1);
        if (::fsync(fd) != 0 || ::close(fd) != 0) return fail(os_error("closing " + path_, errno));
        return {};
    }

  private:
    int fd_;
    std::string path_;
    bool zero_holes_;
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

Result<const repo::DiskRecord*> choose_disk(const repo::RestorePoint& point,
                                            const std::string& name) {
    if (!name.empty()) {
        if (const repo::DiskRecord* disk = point.disk(name)) return disk;
        return fail(ErrorKind::not_found,
                    "restore point " + point.id.short_hex() + " has no disk " + name);
    }
    if (point.disks.size() == 1) return &point.disks[0];
    std::string names;
    for (const auto& d : point.disks) names += (names.empty() ? "" : ", ") + d.name;
    return fail(ErrorKind::invalid_argument, "restore point " + point.id.short_hex() + " has " +
                                                 std::to_string(point.disks.size()) + " disks (" +
                                                 names + "): choose one with --disk");
}

// What the options allow with this target (restore_target.h has the rules): checked before
// anything is written.
Status check_target(const RestoreTarget& target, const ImageRestoreOptions& options,
                    const repo::DiskRecord& disk) {
    if (auto st = refuse_unwritable(target, true); !st) return st;
    const std::string& out = options.output;
    if (target.kind == TargetKind::regular && !options.force)
        return fail(ErrorKind::conflict, out + " exists; choose another path or pass --force");
    if (target.kind != TargetKind::block_device) return {};
    if (options.format != "raw")
        return fail(ErrorKind::invalid_argument,
                    out +
                        " is a block device: a disk is written into a device as raw only "
                        "(drop --format " +
                        options.format + "); nothing was written");
    if (target.device_size < disk.size)
        return fail(ErrorKind::invalid_argument,
                    out + " is a block device of " + std::to_string(target.device_size) +
                        " bytes, smaller than disk " + disk.name + " (" +
                        std::to_string(disk.size) + " bytes): nothing was written");
    if (!options.force)
        return fail(ErrorKind::conflict, out +
                                             " is a block device: pass --force to overwrite "
                                             "its first " +
                                             std::to_string(disk.size) + " bytes with disk " +
                                             disk.name);
    return {};
}

Status write_raw(repo::Repository& repo, const repo::DiskRecord& disk, UniqueFd fd,
                 const std::string& path, bool device, const repo::ReadOptions& ro) {
    // A new file is made sparse at the disk's size; only chunks that hold data are written.
    if (!device && ::ftruncate(fd.get(), static_cast<off_t>(disk.size)) != 0)
        return fail(os_error("sizing " + path, errno));
    FileSink sink(std::move(fd), path, device);
    std::optional<WritebackBehind> behind(std::in_place, path);
    if (auto st = repo::restore_object(repo, disk.map, disk.size, sink, ro); !st) return st;
    behind.reset();
    return sink.close();
}

Status write_qcow2(repo::Repository& repo, const repo::DiskRecord& disk, const std::string& path,
                   repo::ReadOptions ro) {
    if (auto st = create_image(path, "qcow2", disk.size); !st) return st;
    // One connection per worker: each holds one write in flight.
    ro.max_write = kNbdWrite;
    QemuNbdServer::Options nbd{path, "qcow2", false, ro.workers};
    // A restored disk is written once and read by its VM later: no use in the host's cache
    // (bench/RESULTS.md: bypassing it saved a third of a 4 GiB restore's CPU).
    nbd.direct = QemuNbdServer::direct_io_supported(path);
    auto server = QemuNbdServer::start(nbd);
    if (!server) return std::unexpected(server.error());
    {
        std::vector<std::unique_ptr<NbdConnection>> pool;
        for (unsigned i = 0; i < ro.workers; ++i) {
            auto nbd = NbdConnection::connect_unix((*server)->socket(), false);
            if (!nbd) return std::unexpected(nbd.error());
            pool.push_back(std::move(*nbd));
        }
        NbdSink sink(std::move(pool));
        std::optional<WritebackBehind> behind;
        if (!nbd.direct) behind.emplace(path);  // O_DIRECT leaves no dirty pages behind
        if (auto st = repo::restore_object(repo, disk.map, disk.size, sink, ro); !st) return st;
        behind.reset();
        if (auto st = sink.flush(); !st) return st;
    }
    return (*server)->stop();
}

// Without --force nothing may be replaced, not even a file created after the re-check:
// RENAME_NOREPLACE makes that atomic where the filesystem supports it.
Status rename_into_place(const std::string& from, const std::string& to, bool force) {
    int r = ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), force ? 0 : RENAME_NOREPLACE);
    if (r != 0 && errno == EINVAL && !force) r = ::rename(from.c_str(), to.c_str());
    if (r == 0) return {};
    if (errno == EEXIST)
        return fail(ErrorKind::conflict, to + " was created while the restore ran: left as it "
                                              "is, the restored copy was removed");
    return fail(os_error("renaming " + from + " to " + to, errno));
}

// A cancel's error says what the user needs: nothing was left behind. A terminal's ^C also
// reaches qemu-nbd, whose failure is then the cancel's.
Error cancel_or(const Error& error, const std::string& context, const ImageRestoreOptions& o) {
    if (o.task && o.task->cancel().requested())
        return Error(ErrorKind::cancelled, "image restore to " + o.output +
                                               " cancelled: nothing was written there (the "
                                               "partial file was removed)");
    return error.with_context(context);
}

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
    auto chosen = choose_disk(*point, options.disk);
    if (!chosen) return std::unexpected(chosen.error());
    const repo::DiskRecord* disk = *chosen;
    auto target = inspect_restore_target(options.output);
    if (!target) return std::unexpected(target.error());
    if (auto st = check_target(*target, options, *disk); !st) return std::unexpected(st.error());

    if (options.workers > repo::kMaxWorkers)
        return fail(ErrorKind::invalid_argument,
                    "--workers must be 1.." + std::to_string(repo::kMaxWorkers));

    repo::ReadOptions ro;
    // Two threads per core by default: while one waits for its write (qemu-nbd's reply, or
    // pwrite into the page cache), the other decodes and verifies. On object storage at
    // least one per connection: there each read waits a round trip, not the CPU.
    ro.workers = options.workers
                     ? options.workers
                     : std::min(repo::kMaxWorkers, std::max(2 * repo::default_workers(),
                                                            repo.env().read_concurrency()));
    if (options.task) {
        options.task->phase("write", disk->size, 0, disk->name);
        ro.progress = [task = options.task](std::uint64_t done, std::uint64_t) {
            task->bytes_done(done);
        };
        ro.cancel = &options.task->cancel();
    }
    std::string context = "restore point " + point->id.short_hex() + " disk " + disk->name;
    ImageRestoreResult result;
    if (target->kind == TargetKind::block_device) {
        // Written in place: there is no file to swap in, and a failure leaves the device
        // partly written (the error says so).
        auto fd = open_device_target(*target, disk->size);
        if (!fd) return std::unexpected(fd.error());
        if (auto st = write_raw(repo, *disk, std::move(*fd), target->device, true, ro); !st)
            return std::unexpected(
                st.error().with_context(context + " (" + options.output + " is partly written)"));
    } else {
        PartialFile partial{options.output + ".vmshadow-partial"};
        if (options.format == "raw") {
            auto fd = create_new_file(partial.path);
            if (!fd) return std::unexpected(fd.error());
            if (auto st = write_raw(repo, *disk, std::move(*fd), partial.path, false, ro); !st)
                return std::unexpected(cancel_or(st.error(), context, options));
        } else {
            // qemu-img creates the image; the name must be free and no link.
            if (auto fd = create_new_file(partial.path); !fd) return std::unexpected(fd.error());
            if (auto st = write_qcow2(repo, *disk, partial.path, ro); !st)
                return std::unexpected(cancel_or(st.error(), context, options));
            if (disk->size % 512 != 0)
                result.notes.push_back(
                    "qcow2 rounds a virtual size up to a multiple of 512: " + options.output +
                    " reads " + std::to_string(disk->size) + " bytes of the disk, then zeros");
        }
        // Whatever was put at the target while the restore ran is not replaced unasked.
        if (auto st = recheck_before_rename(options.output, options.force); !st)
            return std::unexpected(st.error());
        if (auto st = rename_into_place(partial.path, options.output, options.force); !st)
            return std::unexpected(st.error());
        partial.keep = true;
    }
    result.point = *point;
    result.disk = disk->name;
    result.size = disk->size;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
}

}  // namespace vmshadow::engine
