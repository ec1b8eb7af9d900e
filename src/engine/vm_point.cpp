// SPDX-License-Identifier: MIT
#include "engine/vm_point.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/os_error.h"
#include "engine/restore_target.h"
#include "repo/restore.h"

namespace vmshadow::engine {

Result<VmPoint> open_vm_point(repo::Repository& repo, std::string_view spec,
                              const std::string& operation, std::string_view purpose) {
    VmPoint out;
    auto lock = repo.lock(repo::LockMode::shared, operation);
    if (!lock) return std::unexpected(lock.error());
    out.lock = std::move(*lock);
    if (auto st = repo.load_index(); !st) return std::unexpected(st.error());
    auto listing = repo.list_points();
    if (!listing) return std::unexpected(listing.error());
    auto point = repo::Repository::resolve(*listing, spec);
    if (!point) return std::unexpected(point.error());
    out.label = "restore point " + point->id.short_hex();
    if (point->metadata.value("kind", "") != "vm") {
        return fail(ErrorKind::invalid_argument,
                    out.label + " holds image files, not a VM: " + std::string(purpose));
    }
    out.point = std::move(*point);
    return out;
}

const repo::FileRecord* find_file(const repo::RestorePoint& point, std::string_view role) {
    for (const auto& f : point.files)
        if (f.role == role) return &f;
    return nullptr;
}

Result<std::string> read_text(const repo::Repository& repo, const repo::FileRecord& file) {
    auto bytes = repo::read_file_record(repo, file);
    if (!bytes) return std::unexpected(bytes.error());
    return std::string(bytes->begin(), bytes->end());
}

Status write_point_file(const repo::Repository& repo, const repo::FileRecord& file,
                        const std::filesystem::path& path) {
    auto there = inspect_restore_target(path.string());
    if (!there) return std::unexpected(there.error());
    if (there->kind != TargetKind::absent && there->kind != TargetKind::regular)
        return refuse_unwritable(*there, false);
    auto bytes = repo::read_file_record(repo, file);
    if (!bytes) return std::unexpected(bytes.error().with_context(file.name));
    // O_NOFOLLOW and O_NONBLOCK: a link or a FIFO put there since the look above fails or is
    // seen by fstat below, instead of being followed or waited on.
    UniqueFd fd(
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        return fail(ErrorKind::invalid_argument,
                    path.string() + " is not a regular file (any more): nothing was written");
    if (::ftruncate(fd.get(), 0) != 0) return fail(os_error("write " + path.string(), errno));
    for (std::size_t done = 0; done < bytes->size();) {
        ssize_t n = ::write(fd.get(), bytes->data() + done, bytes->size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            Error e = os_error("write " + path.string(), errno);
            return fail(e.kind(), e.message() + " (is the disk full?)");
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd.get()) != 0) return fail(os_error("write " + path.string(), errno));
    return {};
}

}  // namespace vmshadow::engine
