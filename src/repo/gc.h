// SPDX-License-Identifier: MIT
#pragma once
// Garbage collection and retention (forget/prune).
//
// This module is: the retention plan (pure: points + policy → keep/forget with reasons,
// per VM, never across VMs) and gc, which deletes packs no restore point references and
// rewrites packs that are mostly garbage. It is not: choosing what to back up.
//
// gc runs under the exclusive lock and never creates a dangling reference: new packs are
// written first, then one new index naming every kept blob, then the old index files are
// removed, and only then old packs. A crash at any step leaves garbage (removed by the next
// run), never a restore point that cannot be read. gc refuses to run when any commit record
// or chunk map is unreadable: it would not know what that point references.
//
// Grace period: a pack written less than `grace_seconds` ago (its file's modification time,
// taken from one listing of data/, not asked pack by pack) is neither deleted nor rewritten,
// whatever it holds. A restore point being written and one
// whose commit record was lost in a crash or deleted look the same to gc (indexed data no
// record references); the grace period gives the user the time `repo check` needs to show
// it (PBS keeps chunks 24 h 5 min for the same reason; restic has no grace period).
// Packs no index names (an interrupted run's) are cleanup's, not subject to it.
//
// Thread-safety: runs on the caller's thread.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "repo/repository.h"

namespace vmshadow::repo {

// The largest count a keep rule takes (`vmshadow prune`, jobs, the API's prune preview).
inline constexpr int kMaxKeep = 1'000'000;

struct KeepPolicy {
    int last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0;
    bool empty() const { return !last && !hourly && !daily && !weekly && !monthly && !yearly; }
};

struct PruneDecision {
    Hash256 id;
    std::string vm;
    std::int64_t time = 0;
    bool keep = false;
    std::vector<std::string> reasons;  // "last", "daily 2026-11-21"…
};

// Decisions for every point of `vm` (all VMs when empty), newest first within each VM.
std::vector<PruneDecision> plan_prune(const std::vector<RestorePoint>& points,
                                      const KeepPolicy& policy, const std::string& vm);

// 24 hours: a day's backups, and a nightly `repo check`, see a lost record before its data goes.
inline constexpr std::int64_t kDefaultGraceSeconds = 24 * 3600;
inline constexpr std::int64_t kMaxGraceSeconds = 10LL * 366 * 24 * 3600;

struct GcOptions {
    bool dry_run = false;
    double repack_dead_fraction = 0.25;  // rewrite packs with more garbage than this
    // Packs younger than this are kept whole; 0..kMaxGraceSeconds, else invalid_argument.
    std::int64_t grace_seconds = kDefaultGraceSeconds;
    // Progress (phases mark, rewrite, delete), log and cancellation; nullptr: none. A cancel
    // is honoured until the new index is written (new packs written by then are leftovers the
    // next gc removes); from there on gc runs to its end. The time comes from repo.clock().
    TaskContext* task = nullptr;
};

struct GcReport {
    std::size_t packs_total = 0, packs_removed = 0, packs_rewritten = 0, packs_written = 0;
    std::size_t blobs_live = 0, blobs_dead = 0, leftovers_removed = 0, annotations_removed = 0;
    // Packs holding unreferenced blobs that were kept because they are younger than the
    // grace period, and those blobs (counted in neither blobs_live nor blobs_dead).
    std::size_t packs_kept_young = 0, blobs_kept_young = 0;
    std::int64_t grace_seconds = 0;
    std::uint64_t bytes_before = 0, bytes_after = 0;
};

// Takes the exclusive lock itself.
Result<GcReport> collect_garbage(Repository& repo, const GcOptions& options);

struct PruneResult {
    std::vector<PruneDecision> plan;
    std::optional<GcReport> gc;  // absent on a dry run
};
// Plans, forgets what the plan drops (exclusive lock), then collects garbage with
// `gc_options` (its dry_run is ignored). A dry run only plans (shared lock).
Result<PruneResult> prune(Repository& repo, const KeepPolicy& policy, const std::string& vm,
                          bool dry_run, const GcOptions& gc_options = {});

}  // namespace vmshadow::repo
