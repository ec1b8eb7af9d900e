// SPDX-License-Identifier: MIT
// `vmshadow mount POINT DIR [--disk NAME]` and `vmshadow umount DIR`: read-only file-level
// access to a restore point's filesystems (export/mount.h does the work).
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/repo_cli.h"
#include "export/mount.h"
#include "export/served_disk.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct MountOptions {
    std::string point;
    std::string dir;
    std::string disk;
};

Status run_mount(const GlobalOptions& global, const MountOptions& o) {
    if (global.repo.empty())
        return fail(ErrorKind::invalid_argument,
                    "no repository: pass --repo PATH or set VMSHADOW_REPO");
    // The password (if the repository is encrypted) is asked once, here, and handed to
    // nbdkit in its environment.
    std::string password;
    repo::OpenOptions open;
    open.password = [&global, &password]() -> Result<std::string> {
        auto p = repository_password(global);
        if (p) password = *p;
        return p;
    };
    open.storage = storage_options(global);
    auto repository = repo::Repository::open(global.repo, open);
    if (!repository) return std::unexpected(repository.error());
    auto listing = (*repository)->list_points();
    if (!listing) return std::unexpected(listing.error());
    auto point = repo::Repository::resolve(*listing, o.point);
    if (!point) return std::unexpected(point.error());
    auto disk = exporter::choose_disk(*point, o.disk);
    if (!disk) return std::unexpected(disk.error());

    exporter::MountRequest request;
    request.repo = (*repository)->is_remote() ? (*repository)->root()
                                              : std::filesystem::absolute(global.repo).string();
    request.environment = repo::storage_environment(open.storage);
    request.point = point->id.hex();
    request.disk = (*disk)->name;
    request.dir = o.dir;
    request.password = password;
    auto info = exporter::mount_disk(request);
    if (!info) return std::unexpected(info.error());

    if (global.json) {
        json filesystems = json::array(), skipped = json::array();
        for (const auto& f : info->filesystems)
            filesystems.push_back({{"name", f.name}, {"path", f.path}, {"type", f.type}});
        for (const auto& s : info->skipped)
            skipped.push_back({{"name", s.name}, {"reason", s.reason}});
        std::cout
            << json{{"dir", info->dir},     {"point", point->id.hex()},   {"vm", point->vm},
                    {"disk", request.disk}, {"filesystems", filesystems}, {"skipped", skipped}}
                   .dump()
            << std::endl;
        return {};
    }
    std::cout << "mounted restore point " << point->id.short_hex() << " (" << point->vm << ") disk "
              << request.disk << " read-only:" << std::endl;
    for (const auto& f : info->filesystems)
        std::cout << "  " << f.path << "  " << f.type << std::endl;
    for (const auto& s : info->skipped)
        std::cout << "  " << s.name << ": skipped (" << s.reason << ")" << std::endl;
    std::cout << "unmount with: vmshadow umount " << info->dir << std::endl;
    return {};
}

Status run_umount(const GlobalOptions& global, const std::string& dir) {
    if (auto st = exporter::unmount_disk(dir); !st) return st;
    if (global.json)
        std::cout << json{{"dir", dir}, {"unmounted", true}}.dump() << std::endl;
    else
        std::cout << "unmounted " << dir << std::endl;
    return {};
}

}  // namespace

void add_mount_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    auto m = std::make_shared<MountOptions>();
    CLI::App* mount = app.add_subcommand(
        "mount",
        "mount the filesystems of a restore point's disk read-only on DIR (a whole-disk "
        "filesystem on DIR itself, partition N on DIR/partN), without restoring it");
    mount->add_option("point", m->point, "restore point: id, unique id prefix or NAME@latest")
        ->required();
    mount->add_option("dir", m->dir, "an empty directory")->required();
    mount->add_option("--disk", m->disk, "disk name (needed when the point has several)");
    mount->fallthrough();
    mount->callback(
        [&global, &action, m] { action = [&global, m] { return run_mount(global, *m); }; });

    auto dir = std::make_shared<std::string>();
    CLI::App* umount =
        app.add_subcommand("umount", "unmount what `vmshadow mount` mounted on DIR and stop it");
    umount->add_option("dir", *dir, "the directory given to vmshadow mount")->required();
    umount->fallthrough();
    umount->callback(
        [&global, &action, dir] { action = [&global, dir] { return run_umount(global, *dir); }; });
}

}  // namespace vmshadow::cli
