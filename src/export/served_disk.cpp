// SPDX-License-Identifier: MIT
#include "export/served_disk.h"

#include <cstdlib>
#include <fstream>

namespace vmshadow::exporter {

Result<const repo::DiskRecord*> choose_disk(const repo::RestorePoint& point,
                                            const std::string& name) {
    if (name.empty()) {
        if (point.disks.size() == 1) return &point.disks[0];
        std::string names;
        for (const auto& d : point.disks) names += (names.empty() ? "" : ", ") + d.name;
        if (point.disks.empty())
            return fail(ErrorKind::not_found,
                        "restore point " + point.id.short_hex() + " has no disks");
        return fail(ErrorKind::invalid_argument, "restore point " + point.id.short_hex() + " has " +
                                                     std::to_string(point.disks.size()) +
                                                     " disks (" + names +
                                                     "): choose one (--disk NAME, or disk=NAME)");
    }
    if (const repo::DiskRecord* d = point.disk(name)) return d;
    std::string names;
    for (const auto& d : point.disks) names += (names.empty() ? "" : ", ") + d.name;
    return fail(ErrorKind::not_found, "restore point " + point.id.short_hex() + " has no disk " +
                                          name + " (it has: " + names + ")");
}

Result<std::string> serve_password(const std::string& file) {
    if (const char* env = std::getenv("VMSHADOW_PASSWORD"); env && *env) return std::string(env);
    if (file.empty())
        return fail(ErrorKind::permission,
                    "the repository is encrypted: set VMSHADOW_PASSWORD or password-file=FILE");
    std::ifstream in(file);
    if (!in) return fail(ErrorKind::not_found, "cannot read password file " + file);
    std::string line;
    std::getline(in, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty())
        return fail(ErrorKind::invalid_argument, "password file " + file + " is empty");
    return line;
}

ServedDisk::~ServedDisk() = default;

Result<std::unique_ptr<ServedDisk>> ServedDisk::open(const ServeOptions& options) {
    if (options.repo.empty())
        return fail(ErrorKind::invalid_argument, "no repository given (repo=PATH)");
    if (options.point.empty())
        return fail(ErrorKind::invalid_argument, "no restore point given (point=ID)");
    std::unique_ptr<ServedDisk> s(new ServedDisk());
    repo::OpenOptions open;
    open.password = [&options] { return serve_password(options.password_file); };
    open.storage = options.storage;
    auto r = repo::Repository::open(options.repo, open);
    if (!r) return std::unexpected(r.error());
    s->repo_ = std::move(*r);
    auto lock = s->repo_->lock(repo::LockMode::shared, options.operation);
    if (!lock) return std::unexpected(lock.error());
    s->lock_ = std::move(*lock);
    if (auto st = s->repo_->load_index(); !st) return std::unexpected(st.error());
    auto listing = s->repo_->list_points();
    if (!listing) return std::unexpected(listing.error());
    auto point = repo::Repository::resolve(*listing, options.point);
    if (!point) return std::unexpected(point.error());
    s->point_ = std::move(*point);
    auto disk = choose_disk(s->point_, options.disk);
    if (!disk) return std::unexpected(disk.error());
    s->record_ = **disk;
    auto reader = repo::DiskReader::open(*s->repo_, s->record_, options.cache);
    if (!reader) return std::unexpected(reader.error());
    s->reader_ = std::move(*reader);
    auto overlay =
        OverlayDisk::open(*s->reader_, options.overlay, s->point_.id.hex() + "/" + s->record_.name);
    if (!overlay) return std::unexpected(overlay.error());
    s->overlay_ = std::move(*overlay);
    return s;
}

}  // namespace vmshadow::exporter
