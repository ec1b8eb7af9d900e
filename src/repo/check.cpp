// SPDX-License-Identifier: MIT
#include "repo/check.h"

#include <ctime>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "repo/chunk_map.h"
#include "repo/format.h"
#include "repo/object_env.h"

namespace vmshadow::repo {
namespace {

class Checker {
  public:
    Checker(Repository& repo, const CheckOptions& options, CheckReport& report)
        : repo_(repo), options_(options), report_(report) {}

    Status run() {
        std::vector<Error> damaged;
        if (auto st = repo_.load_index(&damaged); !st) return st;
        for (const auto& e : damaged)
            report_.problems.push_back(e.message() +
                                       " (rebuild the index from the packs: `vmshadow repo "
                                       "repair index`)");
        log("index loaded: " + std::to_string(repo_.index().blob_count()) + " blobs in " +
            std::to_string(repo_.index().packs().size()) + " packs");
        if (auto st = check_packs(); !st) return st;
        if (auto st = check_points(); !st) return st;
        judge_unindexed_packs();
        if (report_.damaged_points.empty() && damaged.empty()) report_unreferenced();
        return {};
    }

  private:
    void log(const std::string& line) {
        if (options_.task) options_.task->info(line);
    }
    Status cancelled() const {
        return options_.task ? options_.task->check_cancel("repository check") : Status{};
    }

    Status check_packs() {
        const Index& index = repo_.index();
        std::set<Hash256> indexed(index.packs().begin(), index.packs().end());
        report_.packs = indexed.size();
        report_.blobs = index.blob_count();
        // Packs present on disk but in no index are leftovers of an interrupted run.
        // One listing of data/ on object storage, not one per folder.
        if (auto packs = repo_.list_pack_files())
            for (const auto& pack : *packs)
                if (!indexed.contains(pack.id)) unindexed_.push_back(pack.path);
        std::size_t done = 0;
        if (options_.task) options_.task->phase("packs", 0, index.packs().size());
        for (const auto& pack : index.packs()) {
            if (auto st = cancelled(); !st) return st;
            check_pack(pack);
            if (options_.task) options_.task->items_done(++done);
        }
        return {};
    }

    void mark_pack_bad(const Hash256& pack, const std::string& why) {
        report_.problems.push_back("pack " + pack_path(repo_.dir(format::kDataDir), pack) + ": " +
                                   why);
        bad_packs_.insert(pack);
    }

    void check_pack(const Hash256& pack) {
        std::string path = pack_path(repo_.dir(format::kDataDir), pack);
        auto file = repo_.env().open(path);
        if (!file) return mark_pack_bad(pack, file.error().message());
        auto entries = read_pack_trailer(**file, repo_.codec());
        if (!entries) return mark_pack_bad(pack, entries.error().message());
        for (const auto& e : *entries) {
            auto loc = repo_.index().find(e.id);
            if (loc && *loc->pack == pack &&
                (loc->entry.offset != e.offset || loc->entry.length != e.length))
                mark_pack_bad(pack,
                              "index and pack trailer disagree about blob " + e.id.short_hex());
        }
        if (!options_.read_data) return;
        const std::int64_t day = unix_seconds(repo_.clock().now()) / 86400;
        if (!pack_in_read_subset(pack, options_.read_data_percent, day)) return;
        ++report_.packs_read;
        Bytes all((*file)->size());
        if (auto st = (*file)->read_at(0, all); !st)
            return mark_pack_bad(pack, st.error().message());
        report_.bytes_read += all.size();
        if (sha256(all) != pack) mark_pack_bad(pack, "content does not match its name (damaged)");
        // A frame's members are adjacent entries: its plaintext is decoded once for them.
        std::optional<std::uint64_t> frame_at;
        Result<Bytes> frame = Bytes{};
        for (const auto& e : *entries) {
            ByteView stored = ByteView(all).subspan(e.offset, e.length);
            Result<Bytes> plain = Bytes{};
            if (e.framed) {
                if (frame_at != e.offset) {
                    frame = decode_stored(repo_.codec(), e, stored);
                    frame_at = e.offset;
                }
                plain = frame ? blob_of(repo_.codec(), e, *frame) : fail(frame.error());
            } else {
                plain = decode_stored(repo_.codec(), e, stored);
            }
            if (!plain) {
                bad_blobs_.insert(e.id);
                report_.problems.push_back("pack " + path + ": blob " + e.id.hex() + ": " +
                                           plain.error().message());
            }
        }
    }

    // Why a blob cannot be read, or nothing.
    std::optional<std::string> blob_problem(const Hash256& id) {
        auto loc = repo_.index().find(id);
        if (!loc) {
            missing_.insert(id);
            return "chunk " + id.hex() + " is missing (in no index)";
        }
        if (bad_blobs_.contains(id)) return "chunk " + id.hex() + " is damaged";
        if (bad_packs_.contains(*loc->pack))
            return "chunk " + id.hex() + " is in damaged pack " + loc->pack->short_hex();
        return std::nullopt;
    }

    // Verifies one block of a chunk map and everything below it; remembers the verdict so
    // blocks shared between points are checked once.
    std::optional<std::string> check_block(const std::vector<std::uint64_t>& counts,
                                           std::uint32_t level, std::uint64_t index,
                                           const Hash256& id) {
        if (id.is_zero()) return std::nullopt;
        if (auto it = verdicts_.find(id); it != verdicts_.end()) return it->second;
        referenced_.insert(id);
        std::optional<std::string> problem = blob_problem(id);
        if (!problem) {
            auto bytes = repo_.read_blob(id);
            std::uint64_t fanout = repo_.config().map_fanout;
            std::uint64_t expected =
                std::min<std::uint64_t>(fanout, counts[level] - index * fanout);
            Result<std::vector<Hash256>> ids =
                bytes ? decode_map_block(*bytes, expected) : fail(bytes.error());
            if (!ids) {
                problem = "chunk-map block " + id.short_hex() + ": " + ids.error().message();
            } else {
                if (level == 0) referenced_.insert(ids->begin(), ids->end());
                for (std::uint64_t i = 0; i < ids->size() && !problem; ++i) {
                    const Hash256& child = (*ids)[i];
                    if (child.is_zero()) continue;
                    problem = level == 0
                                  ? blob_problem(child)
                                  : check_block(counts, level - 1, index * fanout + i, child);
                }
            }
        }
        verdicts_.emplace(id, problem);
        return problem;
    }

    std::optional<std::string> check_object(const MapRef& map, std::uint64_t size) {
        auto counts = map_level_counts(size, repo_.config().chunk_size, repo_.config().map_fanout);
        if (map.levels != counts.size() - 1) return "chunk map has a wrong level count";
        return check_block(counts, map.levels - 1, 0, map.root);
    }

    // A pack no index names is a leftover, or the only copy of chunks points need (a lost
    // index file), or a damaged pack `repo repair index` left out: say which, and what to do.
    void judge_unindexed_packs() {
        std::unordered_set<Hash256, Hash256Hasher> found;
        for (const auto& path : unindexed_) {
            std::string name = "pack " + path;
            auto file = repo_.env().open(path);
            auto entries = file ? read_pack_trailer(**file, repo_.codec())
                                : Result<std::vector<BlobEntry>>(fail(file.error()));
            std::optional<std::string> damage;
            if (!entries) {
                damage = entries.error().message();
            } else if (options_.read_data) {
                Bytes all((*file)->size());
                if (auto st = (*file)->read_at(0, all); !st)
                    damage = st.error().message();
                else if (sha256(all) != *Hash256::from_hex(path.substr(path.rfind('/') + 1)))
                    damage = "content does not match its name";
                report_.bytes_read += all.size();
            }
            if (damage) {
                std::string what = name + " is in no index and is damaged (" + *damage +
                                   "): `vmshadow repo repair index` leaves it out, and backups "
                                   "and gc keep it. ";
                if (missing_.empty())
                    report_.warnings.push_back(what +
                                               "No restore point misses a chunk, so nothing needs "
                                               "it: move it out of data/ or delete it");
                else
                    report_.problems.push_back(
                        what +
                        "The chunks the damaged restore points miss may have been in it: "
                        "those points can't be restored (restore from another copy of the "
                        "repository, or forget them with `vmshadow forget ID`)");
                continue;
            }
            // check stops at the first missing block of a point, so `missing_` holds that
            // block, not every chunk below it: any readable unindexed pack may be needed.
            std::size_t needed = 0;
            for (const auto& e : *entries)
                if (missing_.contains(e.id) && found.insert(e.id).second) ++needed;
            if (!missing_.empty())
                report_.problems.push_back(
                    name + " is in no index while restore points miss chunks" +
                    (needed ? " (it holds " + std::to_string(needed) + " of them)" : "") +
                    ": an index file was lost or damaged; run `vmshadow repo repair index`, "
                    "which indexes every readable pack again");
            else
                report_.warnings.push_back(
                    name +
                    " is in no index and no restore point needs it: left by an interrupted backup "
                    "or gc; the next backup or gc removes it");
        }
        std::size_t lost = 0;
        for (const auto& id : missing_)
            if (!found.contains(id)) ++lost;
        if (lost > 0)
            report_.problems.push_back(
                std::to_string(lost) +
                " chunk(s) restore points need are in no index and in no readable pack under "
                "data/: the restore points named above can't be restored (restore from another "
                "copy of the repository, or forget them with `vmshadow forget ID`)");
    }

    // Indexed data no restore point references: data of forgotten points gc has not removed
    // yet, or of a point whose commit record was lost or deleted; check can't tell which.
    void report_unreferenced() {
        std::int64_t now = unix_seconds(repo_.clock().now());
        // Per pack: the offsets of its unreferenced stored bytes (a frame's members share them).
        std::map<Hash256, std::map<std::uint64_t, std::uint64_t>> unreferenced;
        repo_.index().for_each_blob([&](const Hash256& id, const Hash256& pack,
                                        std::uint64_t offset, std::uint64_t length) {
            if (referenced_.contains(id)) return;
            ++report_.unreferenced_blobs;
            unreferenced[pack][offset] = length;
        });
        for (const auto& [pack, stored] : unreferenced) {
            ++report_.unreferenced_packs;
            for (const auto& [offset, length] : stored) report_.unreferenced_bytes += length;
            auto written = repo_.env().modified_time(pack_path(repo_.dir(format::kDataDir), pack));
            if (written && *written > now - options_.grace_seconds) ++report_.unreferenced_young;
        }
        if (report_.unreferenced_blobs == 0) return;
        std::string grace = std::to_string(options_.grace_seconds / 3600) + " h";
        report_.warnings.push_back(
            std::to_string(report_.unreferenced_blobs) + " blob(s) (" +
            std::to_string(report_.unreferenced_bytes) + " bytes stored) in " +
            std::to_string(report_.unreferenced_packs) +
            " pack(s) are referenced by no restore point: data of points forgotten since the "
            "last gc, or of a restore point whose commit record was lost or deleted. If no point "
            "was forgotten, a record is missing: put it back into commits/ from a copy of the "
            "repository before gc removes the data (gc keeps packs younger than " +
            grace + ": " + std::to_string(report_.unreferenced_young) + " of these " +
            std::to_string(report_.unreferenced_packs) + " are)");
    }

    Status check_points() {
        auto listing = repo_.list_points();
        if (!listing) return std::unexpected(listing.error());
        for (const auto& e : listing->damaged)
            report_.problems.push_back(
                e.message() +
                (e.kind() == ErrorKind::unsupported
                     ? std::string()
                     : " (gc and prune refuse to run while it is there; `vmshadow repo repair "
                       "records` moves it to quarantine/, after which the data only it "
                       "referenced is unreferenced and gc removes it after the grace period)"));
        report_.points = listing->points.size();
        if (options_.task) options_.task->phase("points", 0, listing->points.size());
        for (const auto& p : listing->points) {
            if (auto st = cancelled(); !st) return st;
            if (options_.task)
                options_.task->items_done(static_cast<std::uint64_t>(&p - listing->points.data()));
            std::string name = p.id.hex() + " (" + p.vm + ", " + iso8601_utc(p.time) + ")";
            bool damaged = false;
            for (const auto& d : p.disks)
                if (auto problem = check_object(d.map, d.size)) {
                    report_.problems.push_back("restore point " + name + ": disk " + d.name + ": " +
                                               *problem);
                    damaged = true;
                }
            for (const auto& f : p.files)
                if (auto problem = check_object(f.map, f.size)) {
                    report_.problems.push_back("restore point " + name + ": file " + f.name + ": " +
                                               *problem);
                    damaged = true;
                }
            if (damaged) report_.damaged_points.push_back(name);
        }
        return {};
    }

    Repository& repo_;
    const CheckOptions& options_;
    CheckReport& report_;
    std::vector<std::string> unindexed_;  // paths of packs under data/ no index names
    std::unordered_set<Hash256, Hash256Hasher> missing_;     // chunks points need, in no index
    std::unordered_set<Hash256, Hash256Hasher> referenced_;  // every blob a point needs
    std::set<Hash256> bad_packs_;
    std::unordered_set<Hash256, Hash256Hasher> bad_blobs_;
    std::unordered_map<Hash256, std::optional<std::string>, Hash256Hasher> verdicts_;
};

}  // namespace

Result<CheckReport> check_repository(Repository& repo, const CheckOptions& options) {
    if (options.read_data_percent < 1 || options.read_data_percent > 100) {
        return fail(
            ErrorKind::invalid_argument,
            "read-data percent " + std::to_string(options.read_data_percent) + ": use 1..100");
    }
    // Check judges what the bucket holds, not this host's cached copy of its metadata.
    auto* object = dynamic_cast<ObjectEnv*>(&repo.env());
    if (object) object->bypass_cache(true);
    struct Restore {
        ObjectEnv* env;
        ~Restore() {
            if (env) env->bypass_cache(false);
        }
    } restore{object};
    CheckReport report;
    Checker checker(repo, options, report);
    if (auto st = checker.run(); !st) return std::unexpected(st.error());
    auto idx = repo.env().list(repo.dir(format::kIndexDir));
    report.index_files = idx ? idx->size() : 0;
    return report;
}

bool pack_in_read_subset(const Hash256& pack, unsigned percent, std::int64_t day) {
    if (percent >= 100) return true;
    if (percent == 0) return false;
    // A pack's bucket (0..99) from its name, which is uniformly distributed; the window of
    // `percent` buckets starts where yesterday's ended.
    std::uint64_t name = 0;
    for (int i = 0; i < 8; ++i) name = (name << 8) | pack.bytes[static_cast<std::size_t>(i)];
    const std::uint64_t bucket = name % 100;
    const std::uint64_t start = static_cast<std::uint64_t>(day % 100) * percent % 100;
    return (bucket + 100 - start) % 100 < percent;
}

}  // namespace vmshadow::repo
