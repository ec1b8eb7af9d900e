// SPDX-License-Identifier: MIT
#pragma once
// check: verifies a repository and names every damaged restore point.
//
// This module is: reading every index file, every pack's trailer (and with read_data every
// blob, verified against its id, and every pack's own hash), every commit record and every
// chunk map, and reporting what is wrong in terms an operator can act on ("restore point
// 3f2a… (web1, 2026-11-22T01:00:00Z): disk vda: chunk … is damaged"). It is not: a repair
// tool; it changes nothing.
//
// Thread-safety: runs on the caller's thread; the caller holds a shared lock.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "repo/repository.h"

namespace vmshadow::repo {

struct CheckOptions {
    bool read_data = false;
    // With read_data: the share of packs read back, 1..100 (restic's --read-data-subset). The
    // packs are those whose name falls in a window that moves by this share each day (the
    // repository's clock), so daily checks of 10 % read every pack within 10 days.
    unsigned read_data_percent = 100;
    // Unreferenced data younger than this is counted as kept by gc (gc.h's grace period).
    std::int64_t grace_seconds = 24 * 3600;
    // Progress (phases packs, points — items done of total), log and cancellation (check
    // changes nothing, so it stops anywhere); nullptr: none. The time (grace period) comes
    // from repo.clock().
    TaskContext* task = nullptr;
};

struct CheckReport {
    std::size_t index_files = 0, packs = 0, blobs = 0, points = 0;
    std::uint64_t bytes_read = 0;
    std::size_t packs_read = 0;               // read back in full (read_data)
    std::vector<std::string> problems;        // everything wrong, one line each
    std::vector<std::string> damaged_points;  // "id (vm, time)" of unrestorable points
    // Not damage to any restore point, but shown: leftovers, and unreferenced data (which
    // is also a lost commit record's: check cannot tell the two apart).
    std::vector<std::string> warnings;
    // Indexed blobs no restore point references (counted only when no point is damaged),
    // their stored bytes, their packs, and how many of those gc's grace period still keeps.
    std::size_t unreferenced_blobs = 0, unreferenced_packs = 0, unreferenced_young = 0;
    std::uint64_t unreferenced_bytes = 0;
    bool ok() const { return problems.empty(); }
};

Result<CheckReport> check_repository(Repository& repo, const CheckOptions& options);

// Whether `pack` is read on `day` (days since the epoch) by a check of `percent` % of the data.
bool pack_in_read_subset(const Hash256& pack, unsigned percent, std::int64_t day);

}  // namespace vmshadow::repo
