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

#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "repo/repository.h"

namespace vmshadow::repo {

struct CheckOptions {
    bool read_data = false;
    std::function<void(const std::string&)> log;  // progress lines, optional
};

struct CheckReport {
    std::size_t index_files = 0, packs = 0, blobs = 0, points = 0;
    std::uint64_t bytes_read = 0;
    std::vector<std::string> problems;        // everything wrong, one line each
    std::vector<std::string> damaged_points;  // "id (vm, time)" of unrestorable points
    std::vector<std::string> warnings;        // harmless leftovers (gc removes them)
    bool ok() const { return problems.empty(); }
};

Result<CheckReport> check_repository(Repository& repo, const CheckOptions& options);

}  // namespace vmshadow::repo
