// SPDX-License-Identifier: MIT
#pragma once
// The record of a shadow copy: one JSON file per shadow, <shadow dir>/<id>.json (shadow dir:
// $VMSHADOW_SHADOW_DIR, else /var/lib/vmshadow/shadows), replaced atomically
// (common/atomic_file.h). Beside it, <shadow dir>/vmshadow-shadow-<id>/ holds the job's NBD
// socket, the watcher's pid file and log, and the FUSE mount points of `--mount`.
//
// This module is: the record's fields and JSON, loading (a record that does not parse is
// reported, never guessed at), saving, listing, and the folder's lock — every shadow command
// that changes records holds it (flock on <shadow dir>/.lock: released by the kernel when
// the holder dies). The watcher does not take it: dropping a shadow before its diff area
// passes the maximum cannot wait for another command.
// It is not: the job (virt/shadow_job.h) nor the operations (shadow_ops.h).
//
// Thread-safety: plain functions; the lock is per open file (one holder per process).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/process.h"
#include "common/unique_fd.h"

namespace vmshadow::engine {

inline constexpr const char* kDefaultShadowDir = "/var/lib/vmshadow/shadows";

// $VMSHADOW_SHADOW_DIR, else kDefaultShadowDir.
std::filesystem::path default_shadow_dir();

struct ShadowDiskRecord {
    std::string target;       // "vda"
    std::string export_name;  // NBD export name
    std::uint64_t size = 0;   // virtual size
    std::string scratch;      // the diff area's qcow2 on the host
};

struct ShadowMountRecord {
    std::string disk;   // "vda"
    std::string link;   // DIR/vda: a symlink to the FUSE file
    std::string mount;  // the FUSE mount point (a folder beside the socket)
    ProcessId nbdfuse;  // the daemon serving it
};

struct ShadowRecord {
    std::string id;
    std::string vm;
    std::string uuid;
    std::string connect_uri;
    std::vector<ShadowDiskRecord> disks;
    std::int64_t created = 0;        // unix seconds
    std::string consistency;         // "application" or "crash"
    std::string consistency_reason;  // why (the agent froze N filesystems / why it could not)
    std::uint64_t max_size = 0;      // the diff area's maximum
    std::string socket;
    ProcessId watcher;
    std::vector<ShadowMountRecord> mounts;
    std::string state = "active";  // "active" or "dropped"
    std::string dropped_why;
    std::int64_t dropped_at = 0;

    bool active() const { return state == "active"; }
    std::vector<std::filesystem::path> scratch_files() const;
    // "nbd+unix:///vda?socket=/…/nbd.sock"
    std::string nbd_uri(const ShadowDiskRecord& disk) const;
};

// A dropped shadow's record stays for `shadow list` to say why, for a week (the user had that
// long to read it); after that the sweep every shadow command starts with removes it.
inline constexpr std::int64_t kDroppedShadowKeepSeconds = 7 * 24 * 3600;
// Whether `record` is a dropped shadow the sweep removes at `now` (Unix seconds): dropped more
// than kDroppedShadowKeepSeconds ago (a record without a drop time counts from its creation).
bool dropped_shadow_expired(const ShadowRecord& record, std::int64_t now);

std::string shadow_record_json(const ShadowRecord& record);
Result<ShadowRecord> parse_shadow_record(const std::string& text, const std::string& what);

std::filesystem::path shadow_record_path(const std::filesystem::path& dir, const std::string& id);
// not_found names the id and says how to list shadows.
Result<ShadowRecord> load_shadow(const std::filesystem::path& dir, const std::string& id);
Status save_shadow(const std::filesystem::path& dir, const ShadowRecord& record);
// Every record, oldest first; records that do not parse are skipped and named in `bad`.
Result<std::vector<ShadowRecord>> load_shadows(const std::filesystem::path& dir,
                                               std::vector<std::string>* bad = nullptr);
Status remove_shadow_record(const std::filesystem::path& dir, const std::string& id);

// Whether `id` can name a shadow (8 lower-case hex digits): keeps ids out of paths.
bool valid_shadow_id(const std::string& id);
std::string new_shadow_id();

class ShadowDirLock {
  public:
    // Waits (bounded: 60 s) for the folder's lock; creates the folder.
    static Result<ShadowDirLock> acquire(const std::filesystem::path& dir);

  private:
    UniqueFd fd_;
};

}  // namespace vmshadow::engine
