// SPDX-License-Identifier: MIT
#pragma once
// Repository: where every restore point lives (a local directory, or object storage: a
// location "s3:https://HOST[:PORT]/BUCKET[/PREFIX]", reached through an ObjectEnv the
// repository owns — object_env.h).
//
// This module is: creating and opening a repository (config, format version, keys), the
// index of stored blobs, reading verified blobs, listing and resolving restore points,
// annotations, forget, locks and the cleanup of leftovers of crashed runs. Writing restore
// points is backup_session.h; reading disks back is restore.h; check and gc are check.h
// and gc.h. It is not: anything about VMs or disk image formats.
//
// Layout under the root (docs/REPOSITORY.md has the full format):
//   config  keys/  data/<2 hex>/<pack>  index/<id>  commits/<id>  annotations/<id>
//   locks/<id>  tmp/
// Commit rule: packs, then index files, then the commit record; a restore point exists
// exactly when a commit record names it. Content-addressed files are write-once.
//
// Thread-safety: after open(), const methods and read_blob are safe from many threads;
// load_index must not run concurrently with readers.

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/work_queue.h"
#include "repo/codec.h"
#include "repo/env.h"
#include "repo/index.h"
#include "repo/lock.h"
#include "repo/manifest.h"
#include "repo/storage_options.h"

namespace vmshadow::repo {

// The most worker threads one backup session or restore runs (SessionOptions::workers,
// ReadOptions::workers; more is invalid_argument): more buys nothing on any host vmshadow
// targets, and each costs a stack and, for qcow2 restores, an NBD connection.
inline constexpr unsigned kMaxWorkers = 256;

// The one thread starter (a thread that cannot be created is an error), for repo's own use.
using vmshadow::start_threads;

struct RepoConfig {
    int format_version = 1;
    std::string id;
    std::uint32_t chunk_size = 0;
    std::uint32_t map_fanout = 0;
    int zstd_level = 0;
    bool encrypted = false;
};

struct InitOptions {
    bool encrypt = false;
    std::string password;  // required when encrypt
    ScryptParams kdf;
    std::uint32_t chunk_size = 0;  // 0 = format::kDefaultChunkSize
    std::uint32_t map_fanout = 0;  // 0 = format::kDefaultMapFanout
    int zstd_level = 0;            // 0 = format::kDefaultZstdLevel
    int format_version = 0;        // 0 = format::kVersion; tests make older ones
    StorageOptions storage;        // an "s3:…" location's (the bucket is made when missing)
};

// Called only when the repository is encrypted.
using PasswordSource = std::function<Result<std::string>()>;

struct OpenOptions {
    PasswordSource password;
    Env* env = nullptr;           // nullptr = Env::posix(), or the repository's own for "s3:…"
    std::uint64_t pack_size = 0;  // target pack size for writers; 0 = default
    StorageOptions storage;       // an "s3:…" location's
    // How long lock() waits for a lock another process holds (--retry-lock); 0 = fail at once.
    std::chrono::seconds lock_wait{0};
};

// Anything that hands out verified blobs by id (the repository; tests use fakes).
class BlobSource {
  public:
    virtual ~BlobSource() = default;
    virtual Result<Bytes> read_blob(const Hash256& id) const = 0;
};

struct PointListing {
    std::vector<RestorePoint> points;  // oldest first
    std::vector<Error> damaged;        // commit records or annotations that failed to load
    // The paths of those that are damaged (not merely of a newer version): what
    // `repo repair records` moves to quarantine/.
    std::vector<std::string> damaged_files;
    // Annotation files whose point was forgotten: nothing shows them; gc removes them.
    std::vector<std::string> orphan_annotations;
};

class Repository final : public BlobSource {
  public:
    // `path` is a local directory or an "s3:…" location (then `env` is not used: the
    // repository opens its own ObjectEnv; with options.env set, the given Env is used as is).
    static Status init(const std::string& path, const InitOptions& options,
                       Env& env = Env::posix());
    static Result<std::unique_ptr<Repository>> open(const std::string& path,
                                                    const OpenOptions& options);

    // The local path, or the object store's location ("s3:https://host/bucket/prefix"): what
    // messages name and what a child process (the nbdkit plugin) opens again.
    const std::string& root() const { return root_; }
    // Whether the repository lives on object storage (no local files to look at).
    bool is_remote() const;
    // How an "s3:…" repository was reached, for child processes that open it again
    // (storage_environment()); without its log function.
    const StorageOptions& storage_options() const { return storage_; }
    std::string dir(std::string_view name) const { return root_ + "/" + std::string(name); }
    Env& env() const { return env_; }
    // Where the repository reads the time of day: point and record time stamps, gc's and
    // check's grace period. The system clock unless a test sets another (it must outlive
    // the repository).
    const Clock& clock() const { return *clock_; }
    void set_clock(const Clock& clock) { clock_ = &clock; }
    const Codec& codec() const { return codec_; }
    const RepoConfig& config() const { return config_; }
    const std::string& key_id() const { return key_id_; }
    const MasterKey* master_key() const { return master_key_ ? &*master_key_ : nullptr; }
    std::uint64_t pack_size() const { return pack_size_; }
    // The version of the packs and index files this repository is written with (its
    // format version), and how many chunks one frame may hold (1 = no frames).
    std::uint32_t pack_version() const {
        return config_.format_version >= 2 ? format::kPackVersionFramed
                                           : format::kPackVersionSingle;
    }
    std::uint32_t frame_chunks() const {
        return config_.format_version >= 2 ? std::max(1u, format::kFrameBytes / config_.chunk_size)
                                           : 1u;
    }

    // Loads every index file (again). A damaged index file is an error naming it, unless
    // `damaged` is given: then it is skipped and recorded there (check uses that).
    Status load_index(std::vector<Error>* damaged = nullptr);
    // Every index file's id and content (gc rewrites them).
    Result<std::vector<std::pair<Hash256, std::vector<PackInfo>>>> read_index_files() const;
    const Index& index() const { return index_; }
    // Adds packs this process has just indexed (a committed session's), so the same object
    // reads them without reloading every index file.
    void add_indexed_packs(const std::vector<PackInfo>& packs) {
        for (const auto& p : packs) index_.add_pack(p);
    }

    // Reads, decrypts, decompresses and verifies one blob; errors name the blob and pack.
    // A framed blob's frame is decoded once and kept for the thread's next reads (the last
    // few frames per thread), since readers go through a disk in order.
    Result<Bytes> read_blob(const Hash256& id) const override;
    // Reads `out.size()` stored bytes of pack `pack` from `offset` (one ranged GET on object
    // storage): a restore reads the frames it needs from a pack in a few such reads and
    // decodes them itself. Errors name the pack; a missing pack is a corruption error.
    Status read_pack_range(const Hash256& pack, std::uint64_t offset,
                           std::span<std::uint8_t> out) const;
    std::string pack_file_path(const Hash256& pack) const;

    Result<PointListing> list_points() const;
    // POINT: a full id, a unique id prefix, or NAME@latest.
    static Result<RestorePoint> resolve(const PointListing& listing, std::string_view spec);

    Result<Hash256> write_index_file(const std::vector<PackInfo>& packs) const;
    // Writes one commit record holding `points` (their ids are computed and set).
    Result<Hash256> write_commit(std::vector<RestorePoint>& points) const;
    Hash256 point_id(const RestorePoint& point) const;

    Status annotate(const Hash256& point, const std::string& kind,
                    const nlohmann::json& data) const;

    // Removes points: each commit record naming one is rewritten without it (new record
    // first, then the old one removed). The data stays until gc. Caller holds the exclusive
    // lock.
    Status forget(const std::vector<Hash256>& points) const;

    // Moves a damaged commit record or annotation (a path from PointListing::damaged_files)
    // to quarantine/<dir>-<name>. The sound points of a partly damaged commit record are first
    // written to a new record, so only what cannot be read leaves. Returns how many points it
    // kept. Caller holds the exclusive lock.
    Result<std::size_t> quarantine(const std::string& path) const;

    // Waits up to OpenOptions::lock_wait while another process holds the repository.
    Result<std::unique_ptr<RepoLock>> lock(LockMode mode, const std::string& operation) const;
    void set_lock_wait(std::chrono::seconds wait) { lock_wait_ = wait; }
    // Where the locks this repository hands out report a failed refresh (StorageOptions::log).
    const LockLog& lock_log() const { return lock_log_; }
    // Removes temp files and packs no index names. Needs the exclusive lock and a loaded
    // index; returns how many files it removed. Unindexed packs are kept while the index
    // misses a committed point's map (a lost or damaged index file: `repo repair index`
    // brings them back) and when their trailer is damaged.
    Result<std::size_t> cleanup_leftovers() const;
    // A file under data/<folder>/ named like a pack (64 hex digits); other files are not ours.
    struct PackFile {
        Hash256 id;
        std::string path;
        std::uint64_t size = 0;
        std::int64_t modified = 0;  // Unix seconds (the store's clock on object storage)
    };
    // Every pack file, in path order: one listing of data/ on object storage (Env::list_tree).
    Result<std::vector<PackFile>> list_pack_files() const;
    // Whether every committed point's disk and file maps are indexed.
    bool index_covers_points() const;

  private:
    // read_pack_range with `context` naming what the read was for.
    Status read_range(const Hash256& pack, std::uint64_t offset, std::span<std::uint8_t> out,
                      const std::string& context) const;
    // The pack's file, opened once and kept (a bounded number of them).
    Result<std::shared_ptr<RandomAccessFile>> pack_file(const Hash256& pack) const;
    // Names of the index files (hex ids), sorted; foreign files skipped.
    Result<std::vector<std::string>> index_file_names() const;
    // One index file, decoded and checked against its name.
    Result<std::vector<PackInfo>> read_index_file(const std::string& name) const;
    Repository(std::string root, Env& env, RepoConfig config, std::optional<MasterKey> key,
               std::string key_id);

    std::unique_ptr<Env> owned_env_;  // an "s3:…" repository's: outlives what it opened
    std::string root_;
    Env& env_;
    const Clock* clock_ = &system_clock();
    LockLog lock_log_;
    RepoConfig config_;
    std::optional<MasterKey> master_key_;
    std::string key_id_;
    Codec codec_;
    Index index_;
    std::uint64_t pack_size_;
    std::chrono::seconds lock_wait_{0};
    StorageOptions storage_;
    // Tells this object's cached frames from another's (read_blob).
    std::uint64_t serial_ = next_serial();
    static std::uint64_t next_serial();

    mutable std::mutex files_mutex_;
    mutable std::unordered_map<Hash256, std::shared_ptr<RandomAccessFile>, Hash256Hasher> files_;
};

}  // namespace vmshadow::repo
