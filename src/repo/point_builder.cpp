// SPDX-License-Identifier: MIT
// PointBuilder (backup_session.h): one restore point of a session — its disks and files.
#include "repo/backup_session.h"
#include "repo/format.h"

namespace vmshadow::repo {

PointBuilder::PointBuilder(BackupSession& session, std::string vm, std::string consistency)
    : session_(session) {
    point_.vm = std::move(vm);
    point_.consistency = std::move(consistency);
    auto now = session.repository().clock().now().time_since_epoch();
    point_.time_us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
    point_.time = point_.time_us / 1000000;
}

Result<DiskWriter*> PointBuilder::add_disk(const std::string& name, std::uint64_t size,
                                           const RestorePoint* base, nlohmann::json info) {
    for (const auto& d : disks_)
        if (d->name_ == name)
            return fail(ErrorKind::invalid_argument, "disk " + name + " added twice");
    std::optional<ChunkMap> base_map;
    std::uint64_t base_size = 0;
    const Repository& repo = session_.repository();
    if (base) {
        if (const DiskRecord* d = base->disk(name)) {
            base_map.emplace(repo, d->map, d->size, repo.config().chunk_size,
                             repo.config().map_fanout);
            if (auto st = base_map->validate(); !st)
                return std::unexpected(
                    st.error().with_context("base point " + base->id.short_hex()));
            base_size = d->size;
        }
        point_.parent = base->id;
    }
    disks_.push_back(
        std::make_unique<DiskWriter>(session_, name, size, std::move(base_map), base_size));
    DiskRecord record;
    record.name = name;
    record.size = size;
    record.info = info.is_object() ? info : nlohmann::json::object();
    point_.disks.push_back(std::move(record));
    return disks_.back().get();
}

Result<DiskWriter*> PointBuilder::add_file(const std::string& name, const std::string& role,
                                           std::uint64_t size) {
    for (const auto& f : files_)
        if (f.first.name == name)
            return fail(ErrorKind::invalid_argument, "file " + name + " added twice");
    FileRecord record;
    record.name = name;
    record.role = role;
    record.size = size;
    files_.emplace_back(record,
                        std::make_unique<DiskWriter>(session_, name, size, std::nullopt, 0));
    return files_.back().second.get();
}

Status PointBuilder::add_file(const std::string& name, const std::string& role, ByteView content) {
    auto writer = add_file(name, role, content.size());
    if (!writer) return std::unexpected(writer.error());
    if (auto st = (*writer)->write(0, Bytes(content.begin(), content.end())); !st) return st;
    return (*writer)->finish();
}

}  // namespace vmshadow::repo
