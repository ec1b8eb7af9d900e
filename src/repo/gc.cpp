// SPDX-License-Identifier: MIT
#include "repo/gc.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <set>
#include <unordered_set>

#include "common/time_format.h"
#include "repo/chunk_map.h"
#include "repo/format.h"

namespace vmshadow::repo {
namespace {

std::int64_t order_key(const RestorePoint& p) {
    return p.time_us ? p.time_us : p.time * 1000000;
}

using IdSet = std::unordered_set<Hash256, Hash256Hasher>;

// Adds every blob (map blocks and chunks) an object references; skips subtrees seen before,
// so the cost follows what changed between points, not the number of points.
Status mark_object(const Repository& repo, const MapRef& map, std::uint64_t size, IdSet& live) {
    ChunkMap chunks(repo, map, size, repo.config().chunk_size, repo.config().map_fanout);
    Status st = chunks.for_each_block([&](std::uint32_t level, const Hash256& id) -> Result<bool> {
        if (!live.insert(id).second) return false;
        if (level > 0) return true;
        // A level-0 block: its entries are chunk ids.
        auto bytes = repo.read_blob(id);
        if (!bytes) return std::unexpected(bytes.error());
        for (std::size_t off = 0; off + 32 <= bytes->size(); off += 32) {
            Hash256 chunk;
            std::copy_n(bytes->begin() + off, 32, chunk.bytes.begin());
            if (!chunk.is_zero()) live.insert(chunk);
        }
        return false;
    });
    return st;
}

}  // namespace

std::vector<PruneDecision> plan_prune(const std::vector<RestorePoint>& points,
                                      const KeepPolicy& policy, const std::string& vm) {
    std::map<std::string, std::vector<const RestorePoint*>> by_vm;
    for (const auto& p : points)
        if (vm.empty() || p.vm == vm) by_vm[p.vm].push_back(&p);
    struct Rule {
        const char* name;
        int count;
        const char* fmt;  // nullptr = keep-last
    };
    const Rule rules[] = {
        {"last", policy.last, nullptr},       {"hourly", policy.hourly, "%Y-%m-%d %H:00"},
        {"daily", policy.daily, "%Y-%m-%d"},  {"weekly", policy.weekly, "%G-W%V"},
        {"monthly", policy.monthly, "%Y-%m"}, {"yearly", policy.yearly, "%Y"}};
    std::vector<PruneDecision> out;
    for (auto& [name, list] : by_vm) {
        std::stable_sort(list.begin(), list.end(), [](auto* a, auto* b) {
            return order_key(*a) > order_key(*b);
        });  // newest first
        std::vector<PruneDecision> decisions;
        for (auto* p : list) decisions.push_back(PruneDecision{p->id, p->vm, p->time, false, {}});
        for (const Rule& rule : rules) {
            int kept = 0;
            std::string last_bucket;
            for (auto& d : decisions) {
                if (kept >= rule.count) break;
                if (!rule.fmt) {
                    d.keep = true;
                    d.reasons.push_back("last");
                    ++kept;
                    continue;
                }
                std::string b = format_utc(d.time, rule.fmt);
                if (b == last_bucket) continue;  // the newest point of each period is kept
                last_bucket = b;
                d.keep = true;
                d.reasons.push_back(std::string(rule.name) + " " + b);
                ++kept;
            }
        }
        out.insert(out.end(), decisions.begin(), decisions.end());
    }
    return out;
}

Result<GcReport> collect_garbage(Repository& repo, const GcOptions& options) {
    GcReport report;
    if (options.grace_seconds < 0 || options.grace_seconds > kMaxGraceSeconds)
        return fail(
            ErrorKind::invalid_argument,
            "gc grace period must be 0.." + std::to_string(kMaxGraceSeconds / 3600) + " hours");
    report.grace_seconds = options.grace_seconds;
    const std::int64_t now = unix_seconds(repo.clock().now());
    TaskContext idle;
    TaskContext& task = options.task ? *options.task : idle;
    auto lock = repo.lock(LockMode::exclusive, "gc");
    if (!lock) return std::unexpected(lock.error());
    if (auto st = repo.load_index(); !st) return std::unexpected(st.error());
    if (!options.dry_run) {
        auto removed = repo.cleanup_leftovers();
        if (!removed) return std::unexpected(removed.error());
        report.leftovers_removed = *removed;
    }
    auto listing = repo.list_points();
    if (!listing) return std::unexpected(listing.error());
    if (!listing->damaged.empty())
        return fail(ErrorKind::corruption,
                    "gc refuses to run: " + listing->damaged.front().message() +
                        " (what it references is unknown; `vmshadow repo check` lists every "
                        "damaged record, `vmshadow repo repair records` moves them to "
                        "quarantine/)");
    // Annotations of forgotten points: shown by nothing, referencing nothing.
    report.annotations_removed = listing->orphan_annotations.size();
    if (!options.dry_run) {
        for (const auto& path : listing->orphan_annotations)
            if (auto st = repo.env().remove(path); !st) return std::unexpected(st.error());
    }
    IdSet live;
    task.phase("mark", 0, listing->points.size());
    for (const auto& p : listing->points) {
        if (auto st = task.check_cancel("gc"); !st) return std::unexpected(st.error());
        task.items_done(static_cast<std::uint64_t>(&p - listing->points.data()));
        for (const auto& d : p.disks)
            if (auto st = mark_object(repo, d.map, d.size, live); !st)
                return std::unexpected(st.error().with_context(
                    "gc refuses to run: restore point " + p.id.short_hex() + " disk " + d.name));
        for (const auto& f : p.files)
            if (auto st = mark_object(repo, f.map, f.size, live); !st)
                return std::unexpected(st.error().with_context(
                    "gc refuses to run: restore point " + p.id.short_hex() + " file " + f.name));
    }

    // Every live blob must be indexed before anything is deleted: one that is not sits in a
    // pack a lost or damaged index file used to name, and that pack must not go.
    std::size_t unindexed = 0;
    for (const auto& id : live)
        if (!id.is_zero() && !repo.index().contains(id)) ++unindexed;
    if (unindexed > 0)
        return fail(ErrorKind::corruption,
                    "gc refuses to run: restore points reference " + std::to_string(unindexed) +
                        " chunk(s) that no index names (an index file is missing or damaged); "
                        "run `vmshadow repo repair index`, then gc again");

    auto index_files = repo.read_index_files();
    if (!index_files) return std::unexpected(index_files.error());
    // One copy of each live blob is kept; packs are judged by their live bytes.
    std::map<Hash256, PackInfo> packs;
    for (auto& [file, list] : *index_files)
        for (auto& p : list) packs.emplace(p.id, p);
    IdSet kept;
    std::vector<PackInfo> keep_packs, rewrite_packs;
    std::vector<Hash256> delete_packs;
    for (auto& [id, pack] : packs) {
        std::uint64_t live_bytes = 0, total = 0;
        std::vector<BlobEntry> live_entries;
        // The members of a frame share its stored bytes (and offset): counted once. A frame
        // with one live member is kept whole.
        std::set<std::uint64_t> counted, counted_live;
        for (const auto& e : pack.entries) {
            if (counted.insert(e.offset).second) total += e.length;
            if (live.contains(e.id) && kept.insert(e.id).second) {
                if (counted_live.insert(e.offset).second) live_bytes += e.length;
                live_entries.push_back(e);
                ++report.blobs_live;
            } else {
                ++report.blobs_dead;
            }
        }
        report.bytes_before += pack.size;
        if (live_entries.size() < pack.entries.size() && options.grace_seconds > 0) {
            auto written = repo.env().modified_time(pack_path(repo.dir(format::kDataDir), id));
            if (!written) return std::unexpected(written.error().with_context("gc"));
            if (*written > now - options.grace_seconds) {
                // Possibly a point whose record is being written or was lost: keep it all.
                std::size_t unreferenced = pack.entries.size() - live_entries.size();
                report.blobs_dead -= unreferenced;
                report.blobs_kept_young += unreferenced;
                ++report.packs_kept_young;
                for (const auto& e : pack.entries) kept.insert(e.id);
                report.bytes_after += pack.size;
                keep_packs.push_back(std::move(pack));
                continue;
            }
        }
        if (live_entries.empty()) {
            delete_packs.push_back(id);
        } else if (double(total - live_bytes) > options.repack_dead_fraction * double(total)) {
            pack.entries = std::move(live_entries);
            rewrite_packs.push_back(std::move(pack));
        } else {
            report.bytes_after += pack.size;
            keep_packs.push_back(std::move(pack));
        }
    }
    report.packs_total = packs.size();
    report.packs_removed = delete_packs.size();
    report.packs_rewritten = rewrite_packs.size();
    bool index_clean = index_files->size() <= 1 && delete_packs.empty() && rewrite_packs.empty();
    if (options.dry_run || index_clean) return report;

    // 1. Copy the live blobs of mostly-dead packs into new packs (stored bytes as they are:
    // a blob's or frame's encoding does not depend on its pack; a frame's members keep their
    // place in it). Each is verified on the way.
    std::vector<PackInfo> new_packs;
    std::unique_ptr<PackWriter> writer;
    task.phase("rewrite", 0, rewrite_packs.size());
    for (const auto& pack : rewrite_packs) {
        // A cancel here leaves the new packs of this run unindexed: leftovers the next gc
        // removes; nothing was deleted yet.
        if (auto st = task.check_cancel("gc"); !st) return std::unexpected(st.error());
        task.items_done(static_cast<std::uint64_t>(&pack - rewrite_packs.data()));
        std::string path = pack_path(repo.dir(format::kDataDir), pack.id);
        auto file = repo.env().open(path);
        if (!file) return std::unexpected(file.error());
        for (std::size_t i = 0; i < pack.entries.size();) {
            const BlobEntry& e = pack.entries[i];
            std::size_t end = i + 1;  // the live members of e's frame: adjacent entries
            while (e.framed && end < pack.entries.size() && pack.entries[end].framed &&
                   pack.entries[end].offset == e.offset)
                ++end;
            Bytes stored(e.length);
            if (auto st = (*file)->read_at(e.offset, stored); !st)
                return std::unexpected(st.error());
            auto refuse = [&](const Error& err, const Hash256& id) {
                return err.with_context("gc refuses to copy blob " + id.short_hex() + " of pack " +
                                        path);
            };
            auto plain = decode_stored(repo.codec(), e, stored);
            if (!plain) return std::unexpected(refuse(plain.error(), e.id));
            std::vector<FrameMember> members;
            for (std::size_t k = i; k < end; ++k) {
                const BlobEntry& m = pack.entries[k];
                if (auto blob = blob_of(repo.codec(), m, *plain); !blob)
                    return std::unexpected(refuse(blob.error(), m.id));
                members.push_back(FrameMember{m.id, m.frame_offset, m.raw_length});
            }
            if (!writer) {
                auto created = PackWriter::create(repo.env(), repo.codec(),
                                                  repo.dir(format::kTmpDir), repo.pack_version());
                if (!created) return std::unexpected(created.error());
                writer = std::move(*created);
            }
            Status added =
                e.framed ? writer->add_frame(e.type, stored, e.compressed, e.frame_length, members)
                         : writer->add(e.id, e.type, stored, e.compressed, e.raw_length);
            if (!added) return std::unexpected(added.error());
            if (writer->size() >= repo.pack_size()) {
                auto info = writer->finish(repo.dir(format::kDataDir));
                if (!info) return std::unexpected(info.error());
                new_packs.push_back(std::move(*info));
                writer.reset();
            }
            i = end;
        }
    }
    if (writer) {
        auto info = writer->finish(repo.dir(format::kDataDir));
        if (!info) return std::unexpected(info.error());
        new_packs.push_back(std::move(*info));
        writer.reset();
    }
    report.packs_written = new_packs.size();
    for (const auto& p : new_packs) report.bytes_after += p.size;

    // The last moment a cancel is honoured: from the new index on, gc runs to its end.
    if (auto st = task.check_cancel("gc"); !st) return std::unexpected(st.error());
    task.phase("delete");
    // 2. One index naming everything that stays, before anything is deleted.
    std::vector<PackInfo> all = keep_packs;
    all.insert(all.end(), new_packs.begin(), new_packs.end());
    Hash256 new_index{};
    if (!all.empty()) {
        auto id = repo.write_index_file(all);
        if (!id) return std::unexpected(id.error());
        new_index = *id;
    }
    // 3. Old index files, then 4. the packs nothing names any more.
    for (const auto& [file, list] : *index_files) {
        if (file == new_index) continue;
        if (auto st = repo.env().remove(repo.dir(format::kIndexDir) + "/" + file.hex()); !st)
            return std::unexpected(st.error());
    }
    if (auto st = repo.env().sync_dir(repo.dir(format::kIndexDir)); !st)
        return std::unexpected(st.error());
    std::vector<Hash256> doomed = delete_packs;
    for (const auto& p : rewrite_packs) doomed.push_back(p.id);
    for (const auto& id : doomed)
        if (auto st = repo.env().remove(pack_path(repo.dir(format::kDataDir), id)); !st)
            return std::unexpected(st.error());

    if (auto st = repo.load_index(); !st) return std::unexpected(st.error());
    return report;
}

Result<PruneResult> prune(Repository& repo, const KeepPolicy& policy, const std::string& vm,
                          bool dry_run, const GcOptions& gc_options) {
    if (policy.empty())
        return fail(ErrorKind::invalid_argument,
                    "prune needs at least one --keep-* rule (it would forget every point)");
    if (gc_options.grace_seconds < 0 || gc_options.grace_seconds > kMaxGraceSeconds)
        return fail(
            ErrorKind::invalid_argument,
            "gc grace period must be 0.." + std::to_string(kMaxGraceSeconds / 3600) + " hours");
    PruneResult result;
    {
        auto lock = repo.lock(dry_run ? LockMode::shared : LockMode::exclusive, "prune");
        if (!lock) return std::unexpected(lock.error());
        auto listing = repo.list_points();
        if (!listing) return std::unexpected(listing.error());
        result.plan = plan_prune(listing->points, policy, vm);
        std::vector<Hash256> doomed;
        for (const auto& d : result.plan)
            if (!d.keep) doomed.push_back(d.id);
        if (dry_run) return result;
        if (gc_options.task)
            if (auto st = gc_options.task->check_cancel("prune"); !st)
                return std::unexpected(st.error());
        if (!doomed.empty())
            if (auto st = repo.forget(doomed); !st) return std::unexpected(st.error());
    }
    // The lock is released between forget and gc: gc takes it again itself, and a crash in
    // between leaves only garbage for the next gc.
    GcOptions gc_run = gc_options;
    gc_run.dry_run = false;
    auto gc = collect_garbage(repo, gc_run);
    if (!gc) return std::unexpected(gc.error());
    result.gc = *gc;
    return result;
}

}  // namespace vmshadow::repo
