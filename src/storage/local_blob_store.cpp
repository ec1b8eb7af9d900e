// SPDX-License-Identifier: MIT
#include "storage/local_blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <mutex>

#include "common/os_error.h"
#include "common/unique_fd.h"

namespace vmshadow::storage {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTempDir = ".tmp";
constexpr std::int64_t kTempGraceSeconds = 3600;

std::int64_t now_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

Status write_all(int fd, const std::uint8_t* data, std::size_t size, const std::string& what) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail(os_error(what, errno));
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return {};
}

// Copies `in` to `out` in the kernel when it can (copy_file_range may reflink), else through
// a buffer; exactly `size` bytes, a shorter source is an error (the file changed).
Status copy_fd(int in, int out, std::uint64_t size, const std::string& what) {
    std::uint64_t done = 0;
    bool kernel_copy = true;
    std::vector<std::uint8_t> buffer;
    while (done < size) {
        std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(size - done, 1 << 30));
        if (kernel_copy) {
            ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, want, 0);
            if (n > 0) {
                done += static_cast<std::uint64_t>(n);
                continue;
            }
            if (n == 0) break;
            if (errno == EINTR) continue;
            if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
                return fail(os_error(what, errno));
            kernel_copy = false;  // falls back to read/write from where it is
            buffer.resize(1 << 20);
        }
        ssize_t n = ::read(in, buffer.data(), std::min(want, buffer.size()));
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail(os_error(what, errno));
        }
        if (n == 0) break;
        if (auto st = write_all(out, buffer.data(), static_cast<std::size_t>(n), what); !st)
            return st;
        done += static_cast<std::uint64_t>(n);
    }
    if (done != size)
        return fail(ErrorKind::io, what + ": the file became shorter while it was stored");
    return {};
}

Status fsync_dir(const fs::path& dir, const std::string& what) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return fail(os_error(what + ": open " + dir.string(), errno));
    if (::fsync(fd.get()) != 0) return fail(os_error(what + ": fsync " + dir.string(), errno));
    return {};
}

class LocalBlobStore final : public BlobStore {
  public:
    explicit LocalBlobStore(fs::path root)
        : root_(root.lexically_normal()), location_(root_.string()) {
        // "/srv/repo/" and "/srv/repo" are one store: no trailing separator.
        if (root_.has_relative_path() && !root_.has_filename()) root_ = root_.parent_path();
        location_ = root_.string();
    }

    const std::string& location() const override { return location_; }

    Status put(std::string_view key, ByteView data, const PutOptions& options) override {
        return store(key, options, [&](int fd, const std::string& what) {
            return write_all(fd, data.data(), data.size(), what);
        });
    }

    Status put_file(std::string_view key, const std::string& local_path,
                    const PutOptions& options) override {
        UniqueFd in(::open(local_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!in) return fail(os_error(name(key) + ": open " + local_path, errno));
        struct stat st {};
        if (::fstat(in.get(), &st) != 0)
            return fail(os_error(name(key) + ": stat " + local_path, errno));
        return store(key, options, [&](int fd, const std::string& what) {
            return copy_fd(in.get(), fd, static_cast<std::uint64_t>(st.st_size),
                           what + ": copy from " + local_path);
        });
    }

    Status read_at(std::string_view key, std::uint64_t offset,
                   std::span<std::uint8_t> out) override {
        auto fd = open_object(key);
        if (!fd) return fail(fd.error());
        std::size_t done = 0;
        while (done < out.size()) {
            ssize_t n = ::pread(fd->get(), out.data() + done, out.size() - done,
                                static_cast<off_t>(offset + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                return fail(os_error(name(key) + ": read", errno));
            }
            if (n == 0)
                return fail(ErrorKind::corruption,
                            name(key) + ": the object is shorter than the range asked for (" +
                                std::to_string(offset) + "+" + std::to_string(out.size()) + ")");
            done += static_cast<std::size_t>(n);
        }
        if (out.empty()) return check_empty_read(*this, key, offset);
        return {};
    }

    Result<std::vector<std::uint8_t>> get(std::string_view key) override {
        auto fd = open_object(key);
        if (!fd) return fail(fd.error());
        struct stat st {};
        if (::fstat(fd->get(), &st) != 0) return fail(os_error(name(key) + ": stat", errno));
        std::vector<std::uint8_t> bytes(static_cast<std::size_t>(st.st_size));
        std::size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = ::read(fd->get(), bytes.data() + done, bytes.size() - done);
            if (n < 0) {
                if (errno == EINTR) continue;
                return fail(os_error(name(key) + ": read", errno));
            }
            if (n == 0) break;
            done += static_cast<std::size_t>(n);
        }
        if (done != bytes.size())
            return fail(ErrorKind::corruption, name(key) + ": the object is shorter than its size");
        return bytes;
    }

    Result<BlobInfo> stat(std::string_view key) override {
        if (auto st = check_local_key(key); !st) return fail(st.error());
        struct stat st {};
        if (::stat(path_of(key).c_str(), &st) != 0) {
            if (errno == ENOTDIR) errno = ENOENT;  // a prefix of the key is an object
            return fail(os_error(name(key) + ": stat", errno));
        }
        if (!S_ISREG(st.st_mode)) return fail(ErrorKind::not_found, name(key) + ": no such object");
        return BlobInfo{std::string(key), static_cast<std::uint64_t>(st.st_size), st.st_mtime};
    }

    Result<std::vector<BlobInfo>> list(std::string_view prefix) override;

    Status remove(std::string_view key) override {
        if (auto st = check_local_key(key); !st) return st;
        if (::unlink(path_of(key).c_str()) != 0 && errno != ENOENT && errno != ENOTDIR)
            return fail(os_error(name(key) + ": remove", errno));
        return {};
    }

  private:
    std::string name(std::string_view key) const { return location_ + ": " + std::string(key); }
    fs::path path_of(std::string_view key) const { return root_ / fs::path(std::string(key)); }

    // The temp folder is the store's own: no key may live under it.
    Status check_local_key(std::string_view key) const {
        if (auto st = check_key(key); !st) return fail(st.error().with_context(location_));
        if (key == kTempDir || key.starts_with(std::string(kTempDir) + "/"))
            return fail(ErrorKind::invalid_argument, location_ + ": storage key '" +
                                                         std::string(key) +
                                                         "' is in the store's temp folder .tmp");
        return {};
    }

    Result<UniqueFd> open_object(std::string_view key) {
        if (auto st = check_local_key(key); !st) return fail(st.error());
        UniqueFd fd(::open(path_of(key).c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) {
            if (errno == ENOTDIR || errno == EISDIR) errno = ENOENT;
            return fail(os_error(name(key) + ": open", errno));
        }
        struct stat st {};
        if (::fstat(fd.get(), &st) == 0 && !S_ISREG(st.st_mode))
            return fail(ErrorKind::not_found, name(key) + ": no such object");
        return fd;
    }

    // Writes a temp file with `fill`, makes it durable and moves it into place.
    template <typename Fill>
    Status store(std::string_view key, const PutOptions& options, Fill&& fill) {
        if (auto st = check_local_key(key); !st) return st;
        const std::string what = name(key);
        sweep_old_temp_files();
        auto target = path_of(key);
        std::error_code ec;
        fs::create_directories(root_ / kTempDir, ec);
        if (ec) return fail(os_error(what + ": create " + (root_ / kTempDir).string(), ec));
        bool new_folders = fs::create_directories(target.parent_path(), ec);
        if (ec) return fail(os_error(what + ": create " + target.parent_path().string(), ec));

        std::string temp = (root_ / kTempDir / "put-XXXXXX").string();
        UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
        if (!fd) return fail(os_error(what + ": create a temp file in " + temp, errno));
        struct TempGuard {
            std::string path;
            ~TempGuard() {
                if (!path.empty()) ::unlink(path.c_str());
            }
        } guard{temp};
        ::fchmod(fd.get(), 0644);
        if (auto st = fill(fd.get(), what); !st) return st;
        if (::fdatasync(fd.get()) != 0) return fail(os_error(what + ": fsync", errno));
        fd.reset();

        if (options.if_absent) {
            // link(2) fails on an existing target: the check and the store are one step.
            if (::link(temp.c_str(), target.c_str()) != 0) {
                if (errno == EEXIST)
                    return fail(ErrorKind::conflict, what + ": the object exists already");
                return fail(os_error(what + ": link into place", errno));
            }
        } else if (::rename(temp.c_str(), target.c_str()) != 0) {
            return fail(os_error(what + ": rename into place", errno));
        } else {
            guard.path.clear();
        }
        if (auto st = fsync_dir(target.parent_path(), what); !st) return st;
        // Folders made for this key must survive a crash too: their entries live in their
        // parents, up to the root.
        if (new_folders)
            for (auto dir = target.parent_path(); dir != root_ && dir != dir.parent_path();) {
                dir = dir.parent_path();
                if (auto st = fsync_dir(dir, what); !st) return st;
            }
        return {};
    }

    // A crashed put leaves its temp file; an hour later it cannot belong to a live put.
    void sweep_old_temp_files() {
        auto now = now_seconds();
        auto last = last_sweep_.load();
        if (now - last < kTempGraceSeconds || !last_sweep_.compare_exchange_strong(last, now))
            return;
        std::error_code ec;
        for (fs::directory_iterator it(root_ / kTempDir, ec), end; !ec && it != end;
             it.increment(ec)) {
            struct stat st {};
            if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
                now - st.st_mtime > kTempGraceSeconds)
                ::unlink(it->path().c_str());
        }
    }

    fs::path root_;
    std::string location_;
    std::atomic<std::int64_t> last_sweep_{0};
};

Result<std::vector<BlobInfo>> LocalBlobStore::list(std::string_view prefix) {
    if (prefix.size() > 1024)
        return fail(ErrorKind::invalid_argument,
                    location_ + ": list prefix longer than 1024 bytes");
    // The deepest folder the prefix names; everything below it is a candidate.
    auto slash = prefix.rfind('/');
    std::string folder =
        slash == std::string_view::npos ? "" : std::string(prefix.substr(0, slash));
    if (!folder.empty()) {
        if (auto st = check_key(folder); !st) return std::vector<BlobInfo>{};  // no key matches
    }
    fs::path start = folder.empty() ? root_ : path_of(folder);
    std::vector<BlobInfo> out;
    std::error_code ec;
    fs::recursive_directory_iterator it(start, fs::directory_options::skip_permission_denied, ec);
    if (ec) {
        if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory)
            return out;
        return fail(os_error(location_ + ": list " + std::string(prefix), ec));
    }
    for (fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
        if (ec) {
            // A folder removed while we walk it is just not there any more.
            if (ec == std::errc::no_such_file_or_directory) {
                ec.clear();
                continue;
            }
            return fail(os_error(location_ + ": list " + std::string(prefix), ec));
        }
        auto relative = it->path().lexically_relative(root_).generic_string();
        if (it.depth() == 0 && folder.empty() && relative == kTempDir) {
            it.disable_recursion_pending();
            continue;
        }
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (!relative.starts_with(prefix)) continue;
        out.push_back(BlobInfo{relative, static_cast<std::uint64_t>(st.st_size), st.st_mtime});
    }
    std::sort(out.begin(), out.end(),
              [](const BlobInfo& a, const BlobInfo& b) { return a.key < b.key; });
    return out;
}

}  // namespace

Result<std::unique_ptr<BlobStore>> open_local_blob_store(const std::string& root) {
    if (root.empty()) return fail(ErrorKind::invalid_argument, "blob store: empty folder path");
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec) return fail(os_error("blob store: create " + root, ec));
    if (!fs::is_directory(root, ec))
        return fail(ErrorKind::invalid_argument, "blob store: " + root + " is not a folder");
    return std::unique_ptr<BlobStore>(std::make_unique<LocalBlobStore>(fs::path(root)));
}

}  // namespace vmshadow::storage
