// SPDX-License-Identifier: MIT
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>

#include "engine/image_jobs.h"
#include "engine/nbd_image.h"

namespace vmshadow::engine {
namespace {

constexpr std::uint64_t kWindow = 256ull << 20;  // allocation map per request
constexpr std::uint64_t kReadSize = 4ull << 20;  // one read, one DiskWriter::write

struct Totals {
    std::uint64_t done = 0, total = 0;
    TaskContext* task;
    void add(std::uint64_t n) {
        done += n;
        if (task) task->bytes_done(done);
    }
    Status check() const { return task ? task->check_cancel("image backup") : Status{}; }
};

// The disk's exact size. QEMU rounds a raw file's size up to a multiple of 512 (qemu-img
// info and the NBD export say 1000448 for a file of 1000000 bytes), so for raw the file's
// own size — or the block device's — is the disk's; the export's tail past it is QEMU's
// padding. qcow2 records its virtual size in bytes and QEMU keeps it.
std::uint64_t source_size(const std::string& path, const std::string& format,
                          std::uint64_t exported) {
    if (format != "raw") return exported;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return exported;
    std::uint64_t size = exported;
    if (S_ISREG(st.st_mode)) {
        size = static_cast<std::uint64_t>(st.st_size);
    } else if (S_ISBLK(st.st_mode)) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && ::ioctl(fd, BLKGETSIZE64, &size) != 0) size = exported;
        if (fd >= 0) ::close(fd);
    }
    // Only QEMU's padding is dropped: a size that disagrees otherwise is the export's.
    return size <= exported && exported - size < 512 ? size : exported;
}

// Streams the first `size` bytes of one image into a DiskWriter: only chunks that hold data
// are read.
Status copy_image(NbdConnection& nbd, std::uint64_t size, repo::DiskWriter& disk, Totals& totals) {
    const std::uint64_t cs = disk.chunk_size();
    for (std::uint64_t window = 0; window < size; window += kWindow) {
        if (auto st = totals.check(); !st) return st;
        std::uint64_t window_end = std::min(size, window + kWindow);
        auto extents = nbd.extents(window, window_end - window);
        if (!extents) return std::unexpected(extents.error());
        // Chunk runs that contain any data; windows are chunk-aligned, so runs of different
        // windows never share a chunk.
        std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
        for (const auto& e : *extents) {
            if (e.zero) continue;
            std::uint64_t from = e.offset / cs * cs;
            std::uint64_t to = std::min(size, (e.offset + e.length + cs - 1) / cs * cs);
            if (!runs.empty() && runs.back().second >= from)
                runs.back().second = std::max(runs.back().second, to);
            else
                runs.emplace_back(from, to);
        }
        for (auto [from, to] : runs) {
            for (std::uint64_t off = from; off < to; off += kReadSize) {
                if (auto st = totals.check(); !st) return st;
                std::uint64_t n = std::min(kReadSize, to - off);
                repo::Bytes buffer = disk.buffer(n);
                if (auto st = nbd.pread(buffer.data(), n, off); !st) return st;
                if (auto st = disk.write(off, std::move(buffer)); !st) return st;
                totals.add(n);
            }
        }
        std::uint64_t data = 0;
        for (auto [from, to] : runs) data += to - from;
        totals.add(window_end - window - data);
    }
    return {};
}

std::string cancelled_message(const std::string& name) {
    return "image backup of '" + name +
           "' cancelled: nothing was kept (no restore point; what was stored so far is "
           "referenced by nothing and goes with the next gc)";
}

}  // namespace

Result<ImageBackupResult> backup_images(repo::Repository& repo, const ImageBackupOptions& options) {
    auto started = std::chrono::steady_clock::now();
    if (options.files.empty()) return fail(ErrorKind::invalid_argument, "no image files given");
    if (options.name.empty() || options.name.find('@') != std::string::npos)
        return fail(ErrorKind::invalid_argument, "--name must be non-empty and contain no '@'");
    // Probe everything before taking locks or writing anything.
    std::vector<std::string> formats;
    for (const auto& f : options.files) {
        auto format = probe_image_format(f);
        if (!format) return std::unexpected(format.error());
        formats.push_back(*format);
    }
    auto listing = repo.list_points();
    if (!listing) return std::unexpected(listing.error());
    const repo::RestorePoint* base = nullptr;
    for (const auto& p : listing->points)
        if (p.vm == options.name) base = &p;  // oldest first: the last one is the newest

    repo::SessionOptions so;
    so.workers =
        options.workers ? options.workers : std::min(repo::kMaxWorkers, repo::default_workers());
    so.operation = "image backup " + options.name;
    auto session = repo::BackupSession::begin(repo, so);
    if (!session) return std::unexpected(session.error());
    repo::PointBuilder& point = (*session)->add_point(options.name, "offline");
    point.manifest().metadata = {{"source", "image files"}};

    std::vector<std::unique_ptr<QemuNbdServer>> servers;
    std::vector<std::unique_ptr<NbdConnection>> connections;
    std::vector<std::uint64_t> sizes;
    Totals totals{0, 0, options.task};
    for (std::size_t i = 0; i < options.files.size(); ++i) {
        auto server = QemuNbdServer::start({options.files[i], formats[i], true, 1});
        if (!server) return std::unexpected(server.error());
        auto nbd = NbdConnection::connect_unix((*server)->socket(), true);
        if (!nbd) return std::unexpected(nbd.error().with_context(options.files[i]));
        sizes.push_back(source_size(options.files[i], formats[i], (*nbd)->size()));
        totals.total += sizes.back();
        servers.push_back(std::move(*server));
        connections.push_back(std::move(*nbd));
    }
    std::vector<repo::DiskWriter*> writers;
    if (options.task) options.task->phase("read", totals.total, options.files.size());
    for (std::size_t i = 0; i < options.files.size(); ++i) {
        if (options.task) {
            options.task->set_item(options.files[i]);
            options.task->items_done(i);
        }
        std::error_code ec;
        std::string path = std::filesystem::absolute(options.files[i], ec).string();
        nlohmann::json info{{"path", path}, {"format", formats[i]}};
        auto disk = point.add_disk("disk" + std::to_string(i), sizes[i], base, info);
        if (!disk) return std::unexpected(disk.error());
        if (auto st = copy_image(*connections[i], sizes[i], **disk, totals); !st) {
            // A terminal's ^C reaches qemu-nbd too: its failure is the cancel's.
            if (options.task && options.task->cancel().requested())
                return fail(ErrorKind::cancelled, cancelled_message(options.name));
            return std::unexpected(st.error().with_context(options.files[i]));
        }
        if (auto st = (*disk)->finish(); !st)
            return std::unexpected(st.error().with_context(options.files[i]));
        writers.push_back(*disk);
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    point.manifest().timings = {{"total_s", seconds}};
    if (auto st = totals.check(); !st)
        return fail(ErrorKind::cancelled, cancelled_message(options.name));
    if (options.task) options.task->phase("commit");
    auto committed = (*session)->commit();
    if (!committed) return std::unexpected(committed.error());
    ImageBackupResult result;
    result.point = committed->front();
    for (auto* w : writers) result.disks.push_back(w->stats());
    result.seconds = seconds;
    return result;
}

}  // namespace vmshadow::engine
