// SPDX-License-Identifier: MIT
#pragma once
// repair: rebuilding the repository's index from its packs (`vmshadow repo repair index`).
//
// This module is: reading every pack under data/ (its sealed trailer lists its blobs; with
// read_data, the whole pack, checked against its name), writing ONE new index file naming
// every sound pack, and only then removing the index files that were there before. It is
// not: a way to recover damaged data (a pack it cannot read stays damaged) or check (it
// never reads restore points).
//
// Contract:
// * Runs under the exclusive lock, which it takes itself ("repo repair index").
// * A pack whose trailer is damaged, whose content does not match its name (read_data), or
//   that lies in the wrong data/<2 hex>/ folder is reported and left out of the new index;
//   it is never deleted here. Later backups and gc keep a pack whose trailer is damaged
//   (Repository::cleanup_leftovers); one that only failed read_data they remove as a
//   leftover: whoever wants to keep it moves it out of data/ first.
// * Any other failure to read a pack (I/O, permission, a newer pack version) stops the
//   repair before anything is written: dropping a pack from the index over a passing error
//   would let the next backup delete it.
// * Order, for crash safety: the new index file is written durably first (write_file_atomic),
//   then the old index files are removed and the directory synced. A crash in between leaves
//   two index files naming the same packs, which is valid; a crash before leaves the old ones.
// * Packs an old index file named that are missing from data/ are reported (their chunks
//   are lost); index files that cannot be read are replaced like the others.
// * Afterwards the repository's in-memory index is reloaded from the new index file.
//
// Thread-safety: runs on the caller's thread; nothing else may use `repo` meanwhile.

#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "repo/repository.h"

namespace vmshadow::repo {

struct RepairIndexOptions {
    bool read_data = false;  // also hash every pack against its name
    // Progress (phase "packs": packs read of the total; with read_data, bytes read too),
    // log lines and cancellation; nullptr: none. A cancel is honoured while packs are read,
    // before anything is written (nothing changed, exit kind cancelled); once the new index
    // is being written the repair runs to its end.
    TaskContext* task = nullptr;
};

struct SkippedPack {
    std::string path;  // under data/
    std::string why;
};

struct RepairIndexReport {
    std::size_t packs_indexed = 0, blobs = 0;
    std::uint64_t bytes_read = 0;                   // with read_data
    std::vector<SkippedPack> skipped;               // left out of the new index, not deleted
    std::vector<std::string> missing_packs;         // named by an old index, not in data/
    std::optional<Hash256> new_index;               // absent when there was no pack at all
    std::vector<std::string> index_files_replaced;  // hex ids of the removed index files
    std::vector<std::string> damaged_index_files;   // why each unreadable one was unreadable
    bool ok() const { return skipped.empty() && missing_packs.empty(); }
};

Result<RepairIndexReport> repair_index(Repository& repo, const RepairIndexOptions& options);

// `vmshadow repo repair records`: the way out of a damaged commit record or annotation,
// which makes gc and prune refuse to run. Under the exclusive lock, each damaged one is moved
// to quarantine/ (a partly damaged commit record's sound points are first written to a new
// record). The data only the quarantined record referenced becomes unreferenced: gc keeps it
// for its grace period, then removes it. Records of a newer format version are not damaged
// and are left alone (upgrade vmshadow).
struct QuarantinedRecord {
    std::string path;      // where it was
    std::string why;       // why it could not be read
    std::size_t kept = 0;  // sound points written to a new commit record
};
Result<std::vector<QuarantinedRecord>> repair_records(Repository& repo);

}  // namespace vmshadow::repo
