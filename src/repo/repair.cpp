// SPDX-License-Identifier: MIT
#include "repo/repair.h"

#include <algorithm>
#include <set>

#include "repo/format.h"
#include "repo/index.h"
#include "repo/pack.h"

namespace vmshadow::repo {
namespace {

// A content-addressed file name: 64 hex digits.
std::optional<Hash256> id_of_name(const std::string& name) {
    if (name.size() != 64) return std::nullopt;
    return Hash256::from_hex(name);
}

struct FoundPack {
    Hash256 id;
    std::string path;
};

// Every file under data/<sub>/ named like a pack, in id order; others are not ours.
Result<std::vector<FoundPack>> find_packs(Repository& repo) {
    auto packs = repo.list_pack_files();
    if (!packs) return std::unexpected(packs.error());
    std::vector<FoundPack> out;
    for (const auto& pack : *packs) out.push_back({pack.id, pack.path});
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return a.id != b.id ? a.id < b.id : a.path < b.path;
    });
    return out;
}

// A pack's trailer (and with read_data its name), as the index will describe it. A
// corruption error means "skip this pack"; any other error stops the repair.
Result<PackInfo> read_pack(Repository& repo, const FoundPack& found, bool read_data,
                           std::uint64_t& bytes_read) {
    if (found.path != pack_path(repo.dir(format::kDataDir), found.id))
        return fail(ErrorKind::corruption, "is in the wrong folder (a pack " +
                                               found.id.short_hex() + "… belongs in data/" +
                                               found.id.hex().substr(0, 2) + "/)");
    auto file = repo.env().open(found.path);
    if (!file) return std::unexpected(file.error());
    auto entries = read_pack_trailer(**file, repo.codec());
    if (!entries) return std::unexpected(entries.error());
    if (repo.pack_version() == format::kPackVersionSingle)
        for (const auto& e : *entries)
            if (e.framed)
                return fail(ErrorKind::corruption,
                            "holds frames, which a format version 1 repository never writes");
    if (read_data) {
        Bytes all((*file)->size());
        if (auto st = (*file)->read_at(0, all); !st) return std::unexpected(st.error());
        bytes_read += all.size();
        if (sha256(all) != found.id)
            return fail(ErrorKind::corruption, "content does not match its name (damaged)");
    }
    return PackInfo{found.id, (*file)->size(), std::move(*entries)};
}

struct OldIndexFile {
    std::string name;
    std::vector<PackInfo> packs;  // empty when it could not be read
};

// The index files there are now, each decoded if it can be (to name packs gone missing).
Result<std::vector<OldIndexFile>> read_old_index_files(Repository& repo,
                                                       RepairIndexReport& report) {
    std::string dir = repo.dir(format::kIndexDir);
    auto names = repo.env().list(dir);
    if (!names) return std::unexpected(names.error());
    std::sort(names->begin(), names->end());
    std::vector<OldIndexFile> out;
    for (const auto& name : *names) {
        auto id = id_of_name(name);
        if (!id) continue;  // not ours
        OldIndexFile f{name, {}};
        auto bytes = read_file(repo.env(), dir + "/" + name);
        if (!bytes && bytes.error().kind() != ErrorKind::corruption)
            return std::unexpected(bytes.error());
        Result<std::vector<PackInfo>> packs =
            bytes ? decode_index_file(*bytes, repo.codec()) : fail(bytes.error());
        if (packs && sha256(*bytes) != *id)
            packs = fail(ErrorKind::corruption, "content does not match its name");
        if (packs)
            f.packs = std::move(*packs);
        else
            report.damaged_index_files.push_back("index file " + dir + "/" + name + ": " +
                                                 packs.error().message());
        out.push_back(std::move(f));
    }
    return out;
}

}  // namespace

Result<RepairIndexReport> repair_index(Repository& repo, const RepairIndexOptions& options) {
    TaskContext* task = options.task;
    auto log = [&](const std::string& line) {
        if (task) task->info(line);
    };
    auto lock = repo.lock(LockMode::exclusive, "repo repair index");
    if (!lock) return std::unexpected(lock.error());
    RepairIndexReport report;
    auto old = read_old_index_files(repo, report);
    if (!old) return std::unexpected(old.error());
    auto found = find_packs(repo);
    if (!found) return std::unexpected(found.error());

    // 1. Every pack, read before anything is written: up to here a cancel changes nothing.
    if (task) task->phase("packs", 0, found->size());
    std::vector<PackInfo> good;
    std::set<Hash256> present;
    for (const auto& pack : *found) {
        if (task)
            if (auto st = task->check_cancel("repair index (nothing was changed)"); !st)
                return std::unexpected(st.error());
        present.insert(pack.id);
        auto info = read_pack(repo, pack, options.read_data, report.bytes_read);
        if (!info && info.error().kind() != ErrorKind::corruption)
            return std::unexpected(info.error().with_context("repair index stopped at pack " +
                                                             pack.path + " (nothing was changed)"));
        if (!info) {
            report.skipped.push_back({pack.path, info.error().message()});
        } else {
            report.blobs += info->entries.size();
            good.push_back(std::move(*info));
        }
        std::size_t done = good.size() + report.skipped.size();
        if (task) {
            task->items_done(done);
            if (options.read_data) task->bytes_done(report.bytes_read);
        }
        if (done % 64 == 0)
            log("packs read: " + std::to_string(done) + "/" + std::to_string(found->size()));
    }
    report.packs_indexed = good.size();
    for (const auto& f : *old)
        for (const auto& p : f.packs)
            if (!present.contains(p.id)) report.missing_packs.push_back(p.id.hex());
    std::sort(report.missing_packs.begin(), report.missing_packs.end());
    report.missing_packs.erase(
        std::unique(report.missing_packs.begin(), report.missing_packs.end()),
        report.missing_packs.end());

    // 2. The new index, durable before anything is removed; from here on no cancel.
    if (task) task->phase("index", 0, 0);
    if (!good.empty()) {
        auto id = repo.write_index_file(good);
        if (!id) return std::unexpected(id.error().with_context("writing the new index"));
        report.new_index = *id;
        log("wrote index file " + id->hex() + " naming " + std::to_string(good.size()) + " packs");
    }

    // 3. Then the old index files.
    for (const auto& f : *old) {
        if (report.new_index && f.name == report.new_index->hex()) continue;  // the same bytes
        if (auto st = repo.env().remove(repo.dir(format::kIndexDir) + "/" + f.name); !st)
            return std::unexpected(st.error().with_context("removing the old index file"));
        report.index_files_replaced.push_back(f.name);
    }
    if (auto st = repo.env().sync_dir(repo.dir(format::kIndexDir)); !st)
        return std::unexpected(st.error());

    if (auto st = repo.load_index(); !st) return std::unexpected(st.error());
    return report;
}

Result<std::vector<QuarantinedRecord>> repair_records(Repository& repo) {
    auto lock = repo.lock(LockMode::exclusive, "repo repair records");
    if (!lock) return std::unexpected(lock.error());
    auto listing = repo.list_points();
    if (!listing) return std::unexpected(listing.error());
    std::vector<QuarantinedRecord> out;
    for (const auto& path : listing->damaged_files) {
        QuarantinedRecord q{path, "", 0};
        for (const auto& e : listing->damaged)
            if (e.message().find(path) != std::string::npos) {
                q.why = e.message();
                break;
            }
        auto kept = repo.quarantine(path);
        if (!kept) return std::unexpected(kept.error().with_context("quarantining " + path));
        q.kept = *kept;
        out.push_back(std::move(q));
    }
    return out;
}

}  // namespace vmshadow::repo
