// SPDX-License-Identifier: MIT
#include "repo/gc.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "common/test_hook.h"
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

namespace {

using IndexFiles = std::vector<std::pair<Hash256, std::vector<PackInfo>>>;

// What gc does with each pack: keep it, copy its live blobs into new packs, or delete it.
struct PackPlan {
    std::vector<PackInfo> keep, rewrite;
    std::vector<Hash256> remove;
};

// Leftovers of killed runs and annotations of forgotten points go first; the listing of the
// points gc keeps alive. A damaged record stops gc: what it references is unknown.
Result<PointListing> list_live_points(Repository& repo, const GcOptions& options,
                                      GcReport& report) {
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
    return listing;
}

// Whether gc goes on: not cancelled, and its lock not lost (removed by another host, which
// may be writing now).
Status may_go_on(TaskContext& task, const RepoLock& lock) {
    if (auto st = task.check_cancel("gc"); !st) return st;
    return lock.held();
}

// Every blob a point references (phase "mark", cancellable between points). Every live blob
// must be indexed before anything is deleted: one that is not sits in a pack a lost or
// damaged index file used to name, and that pack must not go.
Result<IdSet> mark_live(const Repository& repo, const PointListing& listing, TaskContext& task,
                        const RepoLock& lock) {
    IdSet live;
    task.phase("mark", 0, listing.points.size());
    test_pause_point("gc-mark");
    for (const auto& p : listing.points) {
        if (auto st = may_go_on(task, lock); !st) return std::unexpected(st.error());
        task.items_done(static_cast<std::uint64_t>(&p - listing.points.data()));
        for (const auto& d : p.disks)
            if (auto st = mark_object(repo, d.map, d.size, live); !st)
                return std::unexpected(st.error().with_context(
                    "gc refuses to run: restore point " + p.id.short_hex() + " disk " + d.name));
        for (const auto& f : p.files)
            if (auto st = mark_object(repo, f.map, f.size, live); !st)
                return std::unexpected(st.error().with_context(
                    "gc refuses to run: restore point " + p.id.short_hex() + " file " + f.name));
    }
    std::size_t unindexed = 0;
    for (const auto& id : live)
        if (!id.is_zero() && !repo.index().contains(id)) ++unindexed;
    if (unindexed > 0)
        return fail(ErrorKind::corruption,
                    "gc refuses to run: restore points reference " + std::to_string(unindexed) +
                        " chunk(s) that no index names (an index file is missing or damaged); "
                        "run `vmshadow repo repair index`, then gc again");
    return live;
}

// When each pack was written, from one listing of data/ made the first time it is asked
// (on object storage a request per 1000 packs, not a HEAD per pack). A pack the listing
// does not show is asked about on its own, so a missing one fails as it always did.
class PackAges {
  public:
    explicit PackAges(const Repository& repo) : repo_(repo) {}
    Result<std::int64_t> written(const Hash256& pack) {
        if (!listed_) {
            auto files = repo_.list_pack_files();
            if (!files) return std::unexpected(files.error());
            for (const auto& f : *files) written_.emplace(f.id, f.modified);
            listed_ = true;
        }
        if (auto it = written_.find(pack); it != written_.end()) return it->second;
        return repo_.env().modified_time(pack_path(repo_.dir(format::kDataDir), pack));
    }

  private:
    const Repository& repo_;
    bool listed_ = false;
    std::unordered_map<Hash256, std::int64_t, Hash256Hasher> written_;
};

// Judges each pack by its live bytes; one copy of each live blob is kept. A pack with
// unreferenced blobs younger than the grace period is kept whole (possibly a point whose
// record is being written or was lost).
Result<PackPlan> plan_packs(const Repository& repo, const IndexFiles& index_files,
                            const IdSet& live, const GcOptions& options, std::int64_t now,
                            GcReport& report) {
    PackAges ages(repo);
    std::map<Hash256, PackInfo> packs;
    for (const auto& [file, list] : index_files)
        for (const auto& p : list) packs.emplace(p.id, p);
    IdSet kept;
    PackPlan plan;
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
            auto written = ages.written(id);
            if (!written) return std::unexpected(written.error().with_context("gc"));
            if (*written > now - options.grace_seconds) {
                std::size_t unreferenced = pack.entries.size() - live_entries.size();
                report.blobs_dead -= unreferenced;
                report.blobs_kept_young += unreferenced;
                ++report.packs_kept_young;
                for (const auto& e : pack.entries) kept.insert(e.id);
                report.bytes_after += pack.size;
                plan.keep.push_back(std::move(pack));
                continue;
            }
        }
        if (live_entries.empty()) {
            plan.remove.push_back(id);
        } else if (double(total - live_bytes) > options.repack_dead_fraction * double(total)) {
            pack.entries = std::move(live_entries);
            plan.rewrite.push_back(std::move(pack));
        } else {
            report.bytes_after += pack.size;
            plan.keep.push_back(std::move(pack));
        }
    }
    report.packs_total = packs.size();
    report.packs_removed = plan.remove.size();
    report.packs_rewritten = plan.rewrite.size();
    return plan;
}

// New packs for the live blobs of mostly-dead packs, filled up to the pack size.
class PackRewriter {
  public:
    explicit PackRewriter(Repository& repo) : repo_(repo) {}

    // Copies one live blob, or the live members [i, end) of one frame, as stored (a blob's
    // or frame's encoding does not depend on its pack; a frame's members keep their place
    // in it), each verified on the way.
    Status copy(const RandomAccessFile& file, const std::string& path,
                const std::vector<BlobEntry>& entries, std::size_t i, std::size_t end) {
        const BlobEntry& e = entries[i];
        Bytes stored(e.length);
        if (auto st = file.read_at(e.offset, stored); !st) return st;
        auto refuse = [&](const Error& err, const Hash256& id) {
            return err.with_context("gc refuses to copy blob " + id.short_hex() + " of pack " +
                                    path);
        };
        auto plain = decode_stored(repo_.codec(), e, stored);
        if (!plain) return std::unexpected(refuse(plain.error(), e.id));
        std::vector<FrameMember> members;
        for (std::size_t k = i; k < end; ++k) {
            const BlobEntry& m = entries[k];
            if (auto blob = blob_of(repo_.codec(), m, *plain); !blob)
                return std::unexpected(refuse(blob.error(), m.id));
            members.push_back(FrameMember{m.id, m.frame_offset, m.raw_length});
        }
        if (!writer_) {
            auto created = PackWriter::create(repo_.env(), repo_.codec(),
                                              repo_.dir(format::kTmpDir), repo_.pack_version());
            if (!created) return std::unexpected(created.error());
            writer_ = std::move(*created);
        }
        Status added =
            e.framed ? writer_->add_frame(e.type, stored, e.compressed, e.frame_length, members)
                     : writer_->add(e.id, e.type, stored, e.compressed, e.raw_length);
        if (!added) return added;
        if (writer_->size() >= repo_.pack_size()) return finish();
        return {};
    }

    // Seals the pack being filled, if any.
    Status finish() {
        if (!writer_) return {};
        auto info = writer_->finish(repo_.dir(format::kDataDir));
        if (!info) return std::unexpected(info.error());
        written_.push_back(std::move(*info));
        writer_.reset();
        return {};
    }

    std::vector<PackInfo>& written() { return written_; }

  private:
    Repository& repo_;
    std::unique_ptr<PackWriter> writer_;
    std::vector<PackInfo> written_;
};

// Phase "rewrite": the live blobs of `rewrite` into new packs. A cancel here leaves the new
// packs of this run unindexed: leftovers the next gc removes; nothing was deleted yet.
Result<std::vector<PackInfo>> rewrite_packs(Repository& repo, const std::vector<PackInfo>& rewrite,
                                            TaskContext& task, const RepoLock& lock) {
    PackRewriter rewriter(repo);
    task.phase("rewrite", 0, rewrite.size());
    for (const auto& pack : rewrite) {
        if (auto st = may_go_on(task, lock); !st) return std::unexpected(st.error());
        task.items_done(static_cast<std::uint64_t>(&pack - rewrite.data()));
        std::string path = pack_path(repo.dir(format::kDataDir), pack.id);
        auto file = repo.env().open(path);
        if (!file) return std::unexpected(file.error());
        for (std::size_t i = 0; i < pack.entries.size();) {
            const BlobEntry& e = pack.entries[i];
            std::size_t end = i + 1;  // the live members of e's frame: adjacent entries
            while (e.framed && end < pack.entries.size() && pack.entries[end].framed &&
                   pack.entries[end].offset == e.offset)
                ++end;
            if (auto st = rewriter.copy(**file, path, pack.entries, i, end); !st)
                return std::unexpected(st.error());
            i = end;
        }
    }
    if (auto st = rewriter.finish(); !st) return std::unexpected(st.error());
    return std::move(rewriter.written());
}

// Phase "delete": one index naming everything that stays, written before anything is
// deleted; then the old index files, then the packs nothing names any more.
Status replace_index_and_delete(Repository& repo, const IndexFiles& index_files,
                                const PackPlan& plan, const std::vector<PackInfo>& new_packs) {
    std::vector<PackInfo> all = plan.keep;
    all.insert(all.end(), new_packs.begin(), new_packs.end());
    Hash256 new_index{};
    if (!all.empty()) {
        auto id = repo.write_index_file(all);
        if (!id) return std::unexpected(id.error());
        new_index = *id;
    }
    for (const auto& [file, list] : index_files) {
        if (file == new_index) continue;
        if (auto st = repo.env().remove(repo.dir(format::kIndexDir) + "/" + file.hex()); !st)
            return st;
    }
    if (auto st = repo.env().sync_dir(repo.dir(format::kIndexDir)); !st) return st;
    std::vector<Hash256> doomed = plan.remove;
    for (const auto& p : plan.rewrite) doomed.push_back(p.id);
    for (const auto& id : doomed)
        if (auto st = repo.env().remove(pack_path(repo.dir(format::kDataDir), id)); !st) return st;
    return repo.load_index();
}

}  // namespace

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
    auto listing = list_live_points(repo, options, report);
    if (!listing) return std::unexpected(listing.error());
    auto live = mark_live(repo, *listing, task, **lock);
    if (!live) return std::unexpected(live.error());
    auto index_files = repo.read_index_files();
    if (!index_files) return std::unexpected(index_files.error());
    auto plan = plan_packs(repo, *index_files, *live, options, now, report);
    if (!plan) return std::unexpected(plan.error());
    bool index_clean = index_files->size() <= 1 && plan->remove.empty() && plan->rewrite.empty();
    if (options.dry_run || index_clean) return report;

    auto new_packs = rewrite_packs(repo, plan->rewrite, task, **lock);
    if (!new_packs) return std::unexpected(new_packs.error());
    report.packs_written = new_packs->size();
    for (const auto& p : *new_packs) report.bytes_after += p.size;
    // The last moment a cancel is honoured: from the new index on, gc runs to its end.
    if (auto st = task.check_cancel("gc"); !st) return std::unexpected(st.error());
    // Nothing is deleted under a lock that is gone: another host may be backing up by now.
    if (auto st = (*lock)->verify(); !st) return std::unexpected(st.error());
    task.phase("delete");
    if (auto st = replace_index_and_delete(repo, *index_files, *plan, *new_packs); !st)
        return std::unexpected(st.error());
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
        if (!doomed.empty()) {
            if (auto st = (*lock)->verify(); !st) return std::unexpected(st.error());
            if (auto st = repo.forget(doomed); !st) return std::unexpected(st.error());
        }
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
