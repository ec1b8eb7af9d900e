// SPDX-License-Identifier: MIT
#pragma once
// Damaging a repository on purpose, for the integration tests of what restore and verify do
// with a corrupted chunk: the chunk's stored blob is found through the repository's own index
// (so the damage hits exactly the chunk the test means, not metadata) and bytes in its middle
// are overwritten in the pack file, as a failing disk would.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "repo/chunk_map.h"
#include "repo/repository.h"

namespace vmshadow::testing {

// Overwrites 4 bytes in the middle of the stored blob of chunk `chunk` (64 KiB units) of disk
// `disk` of restore point `point` (id, prefix or VM@latest). Returns the damaged pack file.
inline std::filesystem::path corrupt_chunk(const std::filesystem::path& repo_dir,
                                           const std::string& point, const std::string& disk,
                                           std::uint64_t chunk = 0) {
    auto repo = repo::Repository::open(repo_dir.string(), {});
    if (!repo) throw std::runtime_error("open repository: " + repo.error().message());
    if (auto st = (*repo)->load_index(); !st)
        throw std::runtime_error("load index: " + st.error().message());
    auto listing = (*repo)->list_points();
    if (!listing) throw std::runtime_error("list points: " + listing.error().message());
    auto p = repo::Repository::resolve(*listing, point);
    if (!p) throw std::runtime_error("resolve " + point + ": " + p.error().message());
    const repo::DiskRecord* record = nullptr;
    for (const auto& d : p->disks)
        if (d.name == disk) record = &d;
    if (!record) throw std::runtime_error("point " + point + " has no disk " + disk);
    repo::ChunkMap map(**repo, record->map, record->size, (*repo)->config().chunk_size,
                       (*repo)->config().map_fanout);
    auto id = map.chunk_id(chunk);
    if (!id) throw std::runtime_error("chunk map: " + id.error().message());
    auto where = (*repo)->index().find(*id);
    if (!where) throw std::runtime_error("chunk " + std::to_string(chunk) + " is a hole");
    std::string pack = where->pack->hex();
    std::filesystem::path file = repo_dir / "data" / pack.substr(0, 2) / pack;
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(where->entry.offset + where->entry.length / 2));
    f.write("XXXX", 4);
    f.flush();
    if (!f) throw std::runtime_error("cannot damage " + file.string());
    return file;
}

}  // namespace vmshadow::testing
