// SPDX-License-Identifier: MIT
// `vmshadow repo stats`: sizes and counts.
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/repo_cli.h"
#include "cli/repo_commands.h"
#include "common/byte_size.h"
#include "repo/lock.h"

namespace vmshadow::cli {

using nlohmann::json;

Status run_stats(const GlobalOptions& global) {
    auto repo = open_repository(global);
    if (!repo) return std::unexpected(repo.error());
    auto lock = (*repo)->lock(repo::LockMode::shared, "repo stats");
    if (!lock) return std::unexpected(lock.error());
    if (auto st = (*repo)->load_index(); !st) return st;
    auto listing = (*repo)->list_points();
    if (!listing) return std::unexpected(listing.error());
    const repo::Index& index = (*repo)->index();
    std::uint64_t stored = 0;
    for (std::size_t i = 0; i < index.packs().size(); ++i) stored += index.pack_size(i);
    std::uint64_t logical = 0;
    std::set<std::string> vms;
    for (const auto& p : listing->points) {
        vms.insert(p.vm);
        for (const auto& d : p.disks) logical += d.size;
    }
    const auto& c = (*repo)->config();
    json j{{"repository", global.repo},   {"format_version", c.format_version},
           {"encrypted", c.encrypted},    {"chunk_size", c.chunk_size},
           {"zstd_level", c.zstd_level},  {"points", listing->points.size()},
           {"vms", vms.size()},           {"packs", index.packs().size()},
           {"blobs", index.blob_count()}, {"stored_bytes", stored},
           {"disk_bytes_total", logical}, {"damaged_records", listing->damaged.size()}};
    if (global.json) {
        std::cout << j.dump() << std::endl;
        return {};
    }
    std::cout << "repository:     " << global.repo << " (format " << c.format_version
              << (c.encrypted ? ", encrypted" : ", not encrypted") << ")\n"
              << "restore points: " << listing->points.size() << " of " << vms.size()
              << " VM(s)/image(s)\n"
              << "stored:         " << format_bytes(stored) << " in " << index.packs().size()
              << " packs, " << index.blob_count() << " blobs\n"
              << "disks covered:  " << format_bytes(logical) << " (sum of virtual sizes)"
              << std::endl;
    return {};
}

void add_repo_stats_command(CLI::App& repo, GlobalOptions& global, Action& action) {
    repo.add_subcommand("stats", "sizes and counts")->callback([&global, &action] {
        action = [&global] { return run_stats(global); };
    });
}

}  // namespace vmshadow::cli
