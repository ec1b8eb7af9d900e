// SPDX-License-Identifier: MIT
#pragma once
// ReplicaStore's state, shared by its source files (private to the replica layer):
// replica_store.cpp (open, create, adopt, overlays, state), replica_cycle.cpp (cycles,
// pruning, block hashes).
#include <filesystem>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "replica/replica_record.h"
#include "replica/replica_store.h"

namespace vmshadow::replica {

struct ReplicaStore::Impl {
    std::filesystem::path folder;
    UniqueFd lock;  // flock on <folder>/.lock, held while the store is open
    detail::StoreRecord record;
    bool cycle_active = false;

    std::filesystem::path path_of(const std::string& name) const { return folder / name; }
    // Replaces replica.json with `next` and, once that succeeded, takes it as the record.
    Status save(detail::StoreRecord next);
    // Merges recovery points beyond the history away (replica_cycle.cpp).
    Status prune();
    // Removes files that are ours by name and that no record names (best effort).
    void remove_files(const std::vector<std::string>& names) const;
};

}  // namespace vmshadow::replica
