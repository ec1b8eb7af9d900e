// SPDX-License-Identifier: MIT
// `vmshadow image backup FILE... --name NAME` and `vmshadow image restore POINT OUT`.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/names.h"
#include "cli/numeric_option.h"
#include "cli/repo_cli.h"
#include "common/byte_size.h"
#include "common/time_format.h"
#include "engine/image_jobs.h"

namespace vmshadow::cli {
namespace {

using nlohmann::json;

struct BackupOptions {
    std::vector<std::string> files;
    std::string name;
    unsigned workers = 0;
};

Status run_backup(const GlobalOptions& global, const BackupOptions& o) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    engine::ImageBackupOptions options;
    options.files = o.files;
    options.name = o.name;
    options.workers = o.workers;
    options.task = global.task;
    auto result = engine::backup_images(**repo, options);
    if (!result) return std::unexpected(result.error());
    const repo::RestorePoint& p = result->point;
    json disks = json::array();
    for (std::size_t i = 0; i < p.disks.size(); ++i) {
        const auto& s = result->disks[i];
        disks.push_back({{"name", p.disks[i].name},
                         {"size", p.disks[i].size},
                         {"bytes_read", s.bytes_written},
                         {"chunks_new", s.chunks_new},
                         {"chunks_unchanged", s.chunks_same},
                         {"chunks_known", s.chunks_known},
                         {"chunks_zero", s.chunks_zero},
                         {"bytes_added", s.bytes_added}});
    }
    if (global.json) {
        std::cout << json{{"id", p.id.hex()},
                          {"vm", p.vm},
                          {"time", iso8601_utc(p.time)},
                          {"bytes_added", p.bytes_added},
                          {"seconds", result->seconds},
                          {"disks", disks}}
                         .dump()
                  << std::endl;
        return {};
    }
    std::cout << "restore point " << p.id.hex() << " (" << p.vm << ")" << std::endl;
    for (const auto& d : disks)
        std::cout << "  " << d["name"].get<std::string>() << ": "
                  << format_bytes(d["size"].get<std::uint64_t>()) << ", read "
                  << format_bytes(d["bytes_read"].get<std::uint64_t>()) << ", "
                  << d["chunks_new"].get<std::uint64_t>() << " new chunks, "
                  << d["chunks_unchanged"].get<std::uint64_t>() +
                         d["chunks_known"].get<std::uint64_t>()
                  << " unchanged/known, " << d["chunks_zero"].get<std::uint64_t>() << " zero"
                  << std::endl;
    std::printf("added %s in %.1f s\n", format_bytes(p.bytes_added).c_str(), result->seconds);
    return {};
}

Status run_restore(const GlobalOptions& global, const engine::ImageRestoreOptions& o) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    engine::ImageRestoreOptions options = o;
    options.task = global.task;
    auto result = engine::restore_image(**repo, options);
    if (!result) return std::unexpected(result.error());
    if (global.json) {
        std::cout << json{{"id", result->point.id.hex()}, {"disk", result->disk},
                          {"output", o.output},           {"format", o.format},
                          {"size", result->size},         {"seconds", result->seconds},
                          {"notes", result->notes}}
                         .dump()
                  << std::endl;
    } else {
        std::printf("restored %s disk %s (%s) to %s in %.1f s\n",
                    result->point.id.short_hex().c_str(), result->disk.c_str(),
                    format_bytes(result->size).c_str(), o.output.c_str(), result->seconds);
        for (const auto& n : result->notes) std::printf("note: %s\n", n.c_str());
    }
    return {};
}

}  // namespace

void add_image_commands(CLI::App& app, GlobalOptions& global, Action& action) {
    CLI::App* image = app.add_subcommand("image", "back up and restore disk image files");
    image->require_subcommand(1);

    auto b = std::make_shared<BackupOptions>();
    CLI::App* backup = image->add_subcommand(
        "backup",
        "back up image files (raw, qcow2) as one restore point; disks are named "
        "disk0, disk1… in argument order");
    backup->add_option("files", b->files, "image files")->required()->check(CLI::ExistingFile);
    add_name_option(*backup, "-n,--name", b->name,
                    "name of the restore point series (like a VM name)")
        ->required();
    add_whole_number_option(*backup, "--workers", b->workers, 1, kMaxWorkers,
                            "hash/compress threads (default: one per core)");
    backup->callback(
        [&global, &action, b] { action = [&global, b] { return run_backup(global, *b); }; });

    auto r = std::make_shared<engine::ImageRestoreOptions>();
    CLI::App* restore = image->add_subcommand("restore", "write one disk of a restore point");
    restore->add_option("point", r->point, "restore point: id, unique id prefix or NAME@latest")
        ->required();
    restore
        ->add_option("output", r->output,
                     "file to create, or a block device to write into (raw, with --force)")
        ->required();
    restore->add_option("--disk", r->disk, "disk name (needed when the point has several)");
    restore->add_option("--format", r->format, "raw (sparse) or qcow2")
        ->check(CLI::IsMember({"raw", "qcow2"}));
    restore->add_flag("--force", r->force,
                      "replace an existing regular file, or write into a block device");
    add_whole_number_option(*restore, "--workers", r->workers, 1, kMaxWorkers,
                            "read/verify threads (default: two per core)");
    restore->callback(
        [&global, &action, r] { action = [&global, r] { return run_restore(global, *r); }; });
}

}  // namespace vmshadow::cli
