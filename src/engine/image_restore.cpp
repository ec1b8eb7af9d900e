// SPDX-License-Identifier: MIT
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

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

class NbdSink final : public repo::DiskSink {
  public:
    explicit NbdSink(NbdConnection& nbd) : nbd_(nbd) {}
    Status write(std::uint64_t offset, repo::ByteView data) override {
        return nbd_.pwrite(data.data(), data.size(), offset);
    }

  private:
    NbdConnection& nbd_;
};

// Removes the partial output unless disarmed.
struct PartialFile {
    std::string path;
    bool keep = false;
    ~PartialFile() {
        if (!keep) ::unlink(path.c_str());
    }
};

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
    if (std::filesystem::exists(options.output) && !options.force)
        return fail(ErrorKind::conflict,
                    options.output + " exists; choose another path or pass --force");
    PartialFile partial{options.output + ".vmshadow-partial"};
    ::unlink(partial.path.c_str());
    repo::ReadOptions ro;
    ro.workers = options.workers ? options.workers : repo::default_workers();
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
        if (auto st = repo::restore_object(repo, disk->map, disk->size, sink, ro); !st)
            return std::unexpected(st.error().with_context(context));
        if (auto st = sink.close(); !st) return std::unexpected(st.error());
    } else {
        if (auto st = create_image(partial.path, "qcow2", disk->size); !st)
            return std::unexpected(st.error());
        auto server = QemuNbdServer::start({partial.path, "qcow2", false, 1});
        if (!server) return std::unexpected(server.error());
        {
            auto nbd = NbdConnection::connect_unix((*server)->socket(), false);
            if (!nbd) return std::unexpected(nbd.error());
            NbdSink sink(**nbd);
            if (auto st = repo::restore_object(repo, disk->map, disk->size, sink, ro); !st)
                return std::unexpected(st.error().with_context(context));
            if (auto st = (*nbd)->flush(); !st) return std::unexpected(st.error());
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
