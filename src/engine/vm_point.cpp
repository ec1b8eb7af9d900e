// SPDX-License-Identifier: MIT
#include "engine/vm_point.h"

#include <fstream>

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
    auto bytes = repo::read_file_record(repo, file);
    if (!bytes) return std::unexpected(bytes.error().with_context(file.name));
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes->data()),
              static_cast<std::streamsize>(bytes->size()));
    out.flush();
    if (!out) return fail(ErrorKind::io, "write " + path.string() + " (is the disk full?)");
    return {};
}

}  // namespace vmshadow::engine
