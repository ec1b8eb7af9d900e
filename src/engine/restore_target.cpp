// SPDX-License-Identifier: MIT
#include "engine/restore_target.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/os_error.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

TargetKind kind_of(mode_t mode) {
    if (S_ISREG(mode)) return TargetKind::regular;
    if (S_ISBLK(mode)) return TargetKind::block_device;
    if (S_ISDIR(mode)) return TargetKind::directory;
    if (S_ISCHR(mode)) return TargetKind::char_device;
    if (S_ISFIFO(mode)) return TargetKind::fifo;
    if (S_ISSOCK(mode)) return TargetKind::socket;
    if (S_ISLNK(mode)) return TargetKind::symlink;
    return TargetKind::other;
}

Status write_zeros(int fd, std::uint64_t offset, std::uint64_t length, const std::string& name) {
    std::vector<char> zeros(std::min<std::uint64_t>(length, 1u << 20), 0);
    while (length > 0) {
        std::size_t n = std::min<std::uint64_t>(length, zeros.size());
        ssize_t w = ::pwrite(fd, zeros.data(), n, static_cast<off_t>(offset));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return std::unexpected(os_error("writing " + name, errno));
        offset += static_cast<std::uint64_t>(w);
        length -= static_cast<std::uint64_t>(w);
    }
    return {};
}

}  // namespace

std::string_view describe(TargetKind kind) {
    switch (kind) {
        case TargetKind::absent:
            return "absent";
        case TargetKind::regular:
            return "a regular file";
        case TargetKind::block_device:
            return "a block device";
        case TargetKind::directory:
            return "a directory";
        case TargetKind::char_device:
            return "a character device";
        case TargetKind::fifo:
            return "a FIFO";
        case TargetKind::socket:
            return "a socket";
        case TargetKind::symlink:
            return "a symbolic link";
        case TargetKind::other:
            break;
    }
    return "not a regular file";
}

Result<RestoreTarget> inspect_restore_target(const std::string& path) {
    RestoreTarget t;
    t.path = path;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return t;
        return std::unexpected(os_error("looking at " + path, errno));
    }
    t.kind = kind_of(st.st_mode);
    if (t.kind == TargetKind::symlink) {
        std::error_code ec;
        t.link_target = fs::read_symlink(path, ec).string();
        struct stat to {};
        // Only a link to a block device is followed (LVM names its volumes with links).
        if (::stat(path.c_str(), &to) == 0 && S_ISBLK(to.st_mode)) {
            t.kind = TargetKind::block_device;
            t.device = fs::canonical(path, ec).string();
            if (ec) t.device = path;
        }
    } else if (t.kind == TargetKind::block_device) {
        t.device = path;
    }
    if (t.kind == TargetKind::block_device) {
        UniqueFd fd(::open(t.device.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
        std::uint64_t bytes = 0;
        if (fd && ::ioctl(fd.get(), BLKGETSIZE64, &bytes) == 0) t.device_size = bytes;
    }
    return t;
}

Status refuse_unwritable(const RestoreTarget& t, bool allow_device) {
    switch (t.kind) {
        case TargetKind::absent:
        case TargetKind::regular:
            return {};
        case TargetKind::block_device:
            if (allow_device) return {};
            break;
        case TargetKind::symlink: {
            std::error_code ec;
            bool dangling = !fs::exists(t.path, ec);
            return fail(ErrorKind::invalid_argument,
                        t.path + " is a symbolic link to " + t.link_target +
                            (dangling ? " (which does not exist)" : "") +
                            ": a restore never replaces a link; restore to the path it points "
                            "to, or remove the link (nothing was written)");
        }
        default:
            break;
    }
    return fail(ErrorKind::invalid_argument,
                t.path + " is " + std::string(describe(t.kind)) +
                    ": a restore writes only to a new path, a regular file or a block device "
                    "(nothing was written)");
}

Status recheck_before_rename(const std::string& path, bool may_replace) {
    auto now = inspect_restore_target(path);
    if (!now) return std::unexpected(now.error());
    if (now->kind == TargetKind::absent) return {};
    if (now->kind == TargetKind::regular) {
        if (may_replace) return {};
        return fail(ErrorKind::conflict, path +
                                             " was created while the restore ran: left as it "
                                             "is, the restored copy was removed");
    }
    return fail(ErrorKind::invalid_argument,
                path + " became " + std::string(describe(now->kind)) +
                    " while the restore ran: left as it is, the restored copy was removed");
}

Result<UniqueFd> create_new_file(const std::string& path) {
    auto there = inspect_restore_target(path);
    if (!there) return std::unexpected(there.error());
    if (there->kind == TargetKind::regular || there->kind == TargetKind::symlink) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            return std::unexpected(os_error("removing " + path, errno));
    } else if (there->kind != TargetKind::absent) {
        return fail(ErrorKind::invalid_argument,
                    path + " is " + std::string(describe(there->kind)) +
                        ": remove it, vmshadow writes a file of that name (nothing was written)");
    }
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd) return std::unexpected(os_error("creating " + path, errno));
    return fd;
}

Result<UniqueFd> open_device_target(const RestoreTarget& t, std::uint64_t needed) {
    // O_EXCL on a block device is an exclusive open: the kernel refuses it while a filesystem
    // is mounted on the device or device-mapper, md or another program holds it.
    UniqueFd fd(::open(t.device.c_str(), O_WRONLY | O_EXCL | O_CLOEXEC));
    if (!fd && errno == EBUSY)
        return fail(ErrorKind::conflict, t.path +
                                             " is in use (mounted, or held by another "
                                             "program): nothing was written");
    if (!fd) return std::unexpected(os_error("opening " + t.path, errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISBLK(st.st_mode))
        return fail(ErrorKind::invalid_argument,
                    t.path + " is no longer a block device: nothing was written");
    std::uint64_t bytes = 0;
    if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0)
        return std::unexpected(os_error("reading the size of " + t.path, errno));
    if (bytes < needed)
        return fail(ErrorKind::invalid_argument,
                    t.path + " is a block device of " + std::to_string(bytes) +
                        " bytes, smaller than the disk's " + std::to_string(needed) +
                        ": nothing was written");
    return fd;
}

Status zero_device_range(int fd, std::uint64_t offset, std::uint64_t length,
                         const std::string& name) {
    int sector = 512;
    if (::ioctl(fd, BLKSSZGET, &sector) != 0 || sector <= 0) sector = 512;
    const auto bs = static_cast<std::uint64_t>(sector);
    const std::uint64_t end = offset + length;
    const std::uint64_t from = std::min(end, (offset + bs - 1) / bs * bs);
    const std::uint64_t to = std::max(from, end / bs * bs);
    if (to > from) {
        std::uint64_t range[2] = {from, to - from};
        if (::ioctl(fd, BLKZEROOUT, range) != 0)
            if (auto st = write_zeros(fd, from, to - from, name); !st) return st;
    }
    if (from > offset)
        if (auto st = write_zeros(fd, offset, from - offset, name); !st) return st;
    if (end > to)
        if (auto st = write_zeros(fd, to, end - to, name); !st) return st;
    return {};
}

}  // namespace vmshadow::engine
