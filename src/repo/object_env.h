// SPDX-License-Identifier: MIT
#pragma once
// ObjectEnv: the repository's Env over a storage::BlobStore (S3, or the local blob store in
// tests), so every repository operation works unchanged on object storage.
//
// This module is: the mapping of the repository's file operations onto objects, the local
// spool for files being written, and the local cache of write-once metadata. It is not: the
// object store itself (storage/), nor the repository format (docs/REPOSITORY.md).
//
// Paths are "<root>/<key>", root being the store's location ("s3:https://h/bucket/prefix"),
// so error messages name the repository as the user wrote it.
// - <root>/tmp/… lives in a local spool folder (made per ObjectEnv, removed with it): files
//   are written there, and rename(tmp → final) stores the whole file with put_file. A pack
//   or record is therefore referenced only once it is fully stored (the commit rule), and
//   write_file_atomic becomes one put of a finished file. sync of a spooled file is a no-op
//   (the object's put is what makes it durable); make_dir and sync_dir are no-ops.
// - open of data/… is an object whose read_at is a ranged GET (its size: one stat at open,
//   which also makes a missing pack not_found there); of anything else, the whole object is
//   read at once (small records).
// - list(dir) = list("<dir>/") cut at the next '/', names unique; a "folder" with no object
//   under it lists empty (object stores have no folders). list_tree(dir) = that one listing,
//   whole keys, with the sizes and times it carries. exists = stat, except for the
//   repository's own folders, which always exist.
// - rename of a stored object (quarantine) is get + put + remove; remove of a missing one
//   succeeds; modified_time is the object's (the store's clock).
// Cache: index/, commits/ and annotations/ hold content-addressed files (their name is the
// SHA-256 of their bytes; written once, removed only by gc, forget or repair). Once
// attach_cache() names a folder, such a file is read from the bucket once and kept there;
// a cached copy is used only when its bytes still hash to its name, and every listing of
// those folders drops cached entries the bucket no longer has or has at another size. So listing
// points and starting a backup re-read nothing unchanged and no pack. keys/ (random names, tiny),
// config (read first, names the cache), locks/ (mutable) and data/ are never cached.
//
// Thread-safety: every method may be called from many threads (as Env requires).

#include <atomic>
#include <memory>
#include <string>

#include "repo/env.h"
#include "repo/storage_options.h"
#include "storage/blob_store.h"

namespace vmshadow::repo {

struct ObjectEnvOptions {
    // Where spool folders are made; "" = $TMPDIR, else /var/tmp.
    std::string spool_parent;
    // How many uploads and reads pay off at once (Env::write_concurrency/read_concurrency):
    // the store's connections for S3; 1 keeps tests over the local blob store deterministic.
    unsigned concurrency = 1;
};

class ObjectEnv final : public Env {
  public:
    static Result<std::unique_ptr<ObjectEnv>> open(std::shared_ptr<storage::BlobStore> store,
                                                   const ObjectEnvOptions& options = {});
    ~ObjectEnv() override;

    // The repository root every path starts with: the store's location.
    const std::string& root() const { return root_; }
    storage::BlobStore& store() { return *store_; }
    // Keeps content-addressed metadata under `dir` from now on (made if missing). A cache
    // that cannot be made is reported and not used: the repository works without it.
    Status attach_cache(const std::string& dir);
    const std::string& cache_dir() const { return cache_dir_; }
    // While set, metadata is read from the store, not the cache (check: it judges what is
    // stored, not a copy of it). Listings still drop stale cache entries.
    void bypass_cache(bool on) { bypass_cache_.store(on); }

    Result<std::unique_ptr<WritableFile>> create(const std::string& path) override;
    Result<std::unique_ptr<RandomAccessFile>> open(const std::string& path) override;
    Result<std::unique_ptr<RandomAccessFile>> open_sized(const std::string& path,
                                                         std::uint64_t size) override;
    Status rename(const std::string& from, const std::string& to) override;
    Status remove(const std::string& path) override;
    Status make_dir(const std::string& path) override;
    Status sync_dir(const std::string& path) override;
    Result<std::vector<std::string>> list(const std::string& dir) override;
    bool exists(const std::string& path) override;
    Result<std::int64_t> modified_time(const std::string& path) override;
    Result<std::vector<FileInfo>> list_tree(const std::string& dir) override;
    unsigned write_concurrency() const override { return concurrency_; }
    unsigned read_concurrency() const override { return concurrency_; }

  private:
    ObjectEnv(std::shared_ptr<storage::BlobStore> store, std::string spool, unsigned concurrency);
    // Where a path lives: the spool (a local path) or the store (a key).
    struct Place {
        bool spooled = false;
        std::string local;  // spooled: the spool file
        std::string key;    // stored: the object key ("" = the root)
    };
    Result<Place> place(const std::string& path) const;
    bool cacheable(const std::string& key) const;
    Result<Bytes> read_cached(const std::string& key);
    void drop_cached(const std::string& key);
    void prune_cache(const std::string& dir_key, const std::vector<storage::BlobInfo>& objects);

    std::shared_ptr<storage::BlobStore> store_;
    std::string root_;
    std::string spool_;
    std::string cache_dir_;
    std::atomic<bool> bypass_cache_{false};
    unsigned concurrency_ = 1;
};

// Opens the S3 store at `location` ("s3:…") with `options` and an ObjectEnv over it; with
// create_bucket (repo init) the bucket is made when missing. Errors name the location.
Result<std::unique_ptr<ObjectEnv>> open_s3_env(const std::string& location,
                                               const StorageOptions& options, bool create_bucket);

// Whether `location` names object storage ("s3:…") rather than a local path.
bool is_object_location(const std::string& location);

// Where a repository's metadata cache lives by default: $XDG_CACHE_HOME/vmshadow/<id>, else
// ~/.cache/vmshadow/<id>; "" when neither can be found (no cache).
std::string default_cache_dir(const std::string& repository_id);

}  // namespace vmshadow::repo
