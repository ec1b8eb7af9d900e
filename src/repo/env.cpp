// SPDX-License-Identifier: MIT
#include "repo/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/os_error.h"

namespace vmshadow::repo {
namespace {

class Fd {
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }

  private:
    int fd_;
};

class PosixWritableFile final : public WritableFile {
  public:
    PosixWritableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
    Status append(ByteView data) override {
        const std::uint8_t* p = data.data();
        std::size_t left = data.size();
        while (left > 0) {
            ssize_t n = ::write(fd_.get(), p, left);
            if (n < 0) {
                if (errno == EINTR) continue;
                return std::unexpected(os_error("writing " + path_, errno));
            }
            p += n;
            left -= static_cast<std::size_t>(n);
        }
        return {};
    }
    Status sync() override {
        if (::fdatasync(fd_.get()) != 0)
            return std::unexpected(os_error("syncing " + path_, errno));
        return {};
    }
    Status close() override {
        int fd = fd_.release();
        if (fd >= 0 && ::close(fd) != 0)
            return std::unexpected(os_error("closing " + path_, errno));
        return {};
    }
    const std::string& path() const override { return path_; }

  private:
    Fd fd_;
    std::string path_;
};

class PosixRandomAccessFile final : public RandomAccessFile {
  public:
    PosixRandomAccessFile(int fd, std::string path, std::uint64_t size)
        : fd_(fd), path_(std::move(path)), size_(size) {}
    Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) const override {
        std::size_t done = 0;
        while (done < out.size()) {
            ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done,
                                static_cast<off_t>(offset + done));
            if (n < 0) {
                if (errno == EINTR) continue;
                return std::unexpected(os_error("reading " + path_, errno));
            }
            if (n == 0)
                return fail(ErrorKind::corruption,
                            path_ + " is truncated (wanted " + std::to_string(out.size()) +
                                " bytes at offset " + std::to_string(offset) + ")");
            done += static_cast<std::size_t>(n);
        }
        return {};
    }
    std::uint64_t size() const override { return size_; }

  private:
    Fd fd_;
    std::string path_;
    std::uint64_t size_;
};

class PosixEnv final : public Env {
  public:
    Result<std::unique_ptr<WritableFile>> create(const std::string& path) override {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) return std::unexpected(os_error("creating " + path, errno));
        return std::make_unique<PosixWritableFile>(fd, path);
    }
    Result<std::unique_ptr<RandomAccessFile>> open(const std::string& path) override {
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0) return std::unexpected(os_error("opening " + path, errno));
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) return std::unexpected(os_error("stat " + path, errno));
        return std::make_unique<PosixRandomAccessFile>(fd.release(), path,
                                                       static_cast<std::uint64_t>(st.st_size));
    }
    Status rename(const std::string& from, const std::string& to) override {
        if (::rename(from.c_str(), to.c_str()) != 0)
            return std::unexpected(os_error("renaming " + from + " to " + to, errno));
        return {};
    }
    Status remove(const std::string& path) override {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            return std::unexpected(os_error("removing " + path, errno));
        return {};
    }
    Status make_dir(const std::string& path) override {
        if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
            return std::unexpected(os_error("creating directory " + path, errno));
        return {};
    }
    Status sync_dir(const std::string& path) override {
        Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (fd.get() < 0) return std::unexpected(os_error("opening directory " + path, errno));
        if (::fsync(fd.get()) != 0)
            return std::unexpected(os_error("syncing directory " + path, errno));
        return {};
    }
    Result<std::vector<std::string>> list(const std::string& dir) override {
        std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
        if (!d) return std::unexpected(os_error("listing " + dir, errno));
        std::vector<std::string> names;
        while (dirent* e = ::readdir(d.get())) {
            std::string name = e->d_name;
            if (name != "." && name != "..") names.push_back(std::move(name));
        }
        return names;
    }
    bool exists(const std::string& path) override {
        struct stat st {};
        return ::stat(path.c_str(), &st) == 0;
    }
};

}  // namespace

Result<std::int64_t> Env::modified_time(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::unexpected(os_error("stat " + path, errno));
    return static_cast<std::int64_t>(st.st_mtime);
}

Result<std::vector<FileInfo>> Env::list_tree(const std::string& dir) {
    namespace fs = std::filesystem;
    std::vector<FileInfo> out;
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, ec);
    for (fs::recursive_directory_iterator end; !ec && it != end; it.increment(ec)) {
        struct stat st {};
        if (::stat(it->path().c_str(), &st) != 0) {
            if (errno == ENOENT) continue;  // removed while listed
            return std::unexpected(os_error("stat " + it->path().string(), errno));
        }
        if (!S_ISREG(st.st_mode)) continue;
        out.push_back(FileInfo{it->path().lexically_relative(dir).generic_string(),
                               static_cast<std::uint64_t>(st.st_size),
                               static_cast<std::int64_t>(st.st_mtime)});
    }
    if (ec) return std::unexpected(os_error("listing " + dir, ec));
    std::sort(out.begin(), out.end(),
              [](const FileInfo& a, const FileInfo& b) { return a.name < b.name; });
    return out;
}

Env& Env::posix() {
    static PosixEnv env;
    return env;
}

Result<Bytes> read_file(Env& env, const std::string& path) {
    auto file = env.open(path);
    if (!file) return std::unexpected(file.error());
    Bytes data((*file)->size());
    if (auto st = (*file)->read_at(0, data); !st) return std::unexpected(st.error());
    return data;
}

std::string unique_temp_name(const std::string& prefix) {
    static std::atomic<std::uint64_t> counter{0};
    return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

Status write_file_atomic(Env& env, const std::string& tmp_dir, const std::string& dir,
                         const std::string& name, ByteView data) {
    std::string tmp = tmp_dir + "/" + unique_temp_name(name);
    auto file = env.create(tmp);
    if (!file) return std::unexpected(file.error());
    Status st = (*file)->append(data);
    if (st) st = (*file)->sync();
    if (st) st = (*file)->close();
    if (st) st = env.rename(tmp, dir + "/" + name);
    if (!st) {
        (void)env.remove(tmp);  // best effort; cleanup removes it otherwise
        return st;
    }
    return env.sync_dir(dir);
}

}  // namespace vmshadow::repo
