// SPDX-License-Identifier: MIT
#pragma once
// The replica store's record, replica.json (private to the replica layer): what ReplicaStore
// (replica_store.h) keeps, as JSON, versioned, and parsed defensively — a damaged or foreign
// file is an error naming it, never a crash, and no name in it can reach outside the store's
// folder (layer names are checked against the store's own patterns).
//
// The layers form one stack per store, bottom first: entry 0 is the base (no backing file,
// or the adopted image by absolute path), entry k's files are overlays above entry k-1's.
// A recovery point names one entry (its top); an entry without a point is only below points
// (a merge that was cut off: the next prune finishes it).
//
// Thread-safety: plain values and pure functions.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "replica/replica_store.h"

namespace vmshadow::replica::detail {

struct LayerSet {
    std::vector<std::string> files;    // one per disk
    std::vector<std::uint64_t> sizes;  // the disks' sizes in this layer
    std::vector<std::string> backing;  // absolute images below the bottom entry (adopt), or empty
};

struct Overlays {
    std::uint64_t seq = 0;  // the pinned point
    std::vector<std::string> files;
};

struct StoreRecord {
    StoreIdentity identity;
    std::string state;
    std::vector<LayerSet> stack;               // bottom first
    std::vector<RecoveryPoint> points;         // oldest first; each names a stack entry
    std::map<std::string, Overlays> overlays;  // "test", "live"
    std::uint64_t next_seq = 0;
};

inline constexpr std::string_view kRecordName = "replica.json";

std::string record_to_json(const StoreRecord& record);
// `file` names the record in errors (corruption: damaged; unsupported: another version).
Result<StoreRecord> parse_record(std::string_view text, const std::string& file);

// A disk target usable in file names ("vda", "sdb", "hd_1").
bool valid_target(std::string_view target);
// "p<seq>-<target>.qcow2", "test-<target>.qcow2", "live-<target>.qcow2".
bool valid_layer_name(std::string_view name);
std::string layer_name(std::uint64_t seq, const std::string& target);

// The stack index a point's layers are (npos when none).
std::size_t stack_index(const StoreRecord& record, const RecoveryPoint& point);

}  // namespace vmshadow::replica::detail
