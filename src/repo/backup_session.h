// SPDX-License-Identifier: MIT
#pragma once
// BackupSession: the write API of the repository. One session = one commit record = one
// group of restore points that exist together or not at all.
//
// This module is: turning (offset, data) extents, zero ranges and "unchanged since the base
// point" ranges into chunks (fixed, chunk-aligned boundaries), ids, compressed and
// encrypted blobs in packs, chunk maps, and finally index files and the commit record. The
// live-backup engine (libvirt NBD exports, dirty bitmaps) and the image-file engine are both
// clients of it. It is not: reading any source, or knowing about VMs beyond the metadata it
// is handed.
//
// Usage:
//   auto session = BackupSession::begin(repo, {});          // shared lock; cleans leftovers
//   PointBuilder& p = (*session)->add_point("web1", "crash"); // per VM
//   DiskWriter* d = *p.add_disk("vda", size, base_point);    // per disk
//   d->write(off, bytes); d->zero(off, len); d->unchanged(off, len);  // ascending offsets
//   d->finish();
//   p.add_file("domain.xml", "domain_xml", xml);
//   auto points = (*session)->commit();                     // the only commit point
// A session destroyed without commit() leaves no restore point; the packs it wrote are
// removed (or, after a crash, by the next run's cleanup).
//
// Storage: in a format version 2 repository the new chunks of one write() are compressed
// together in frames of up to format::kFrameBytes (better compression than 64 KiB alone),
// while dedup and ids stay per chunk.
//
// Contract of DiskWriter calls: ranges come in ascending, non-overlapping order; offsets
// are multiples of chunk_size(); lengths are too, except a range that ends at the disk's end.
// Bytes not covered by any call are holes. A chunk of zeros is stored as a hole. A chunk
// whose id equals the base point's chunk at the same index, or that the repository already
// holds, is neither compressed nor stored.
//
// Threading: a pool of workers hashes, compresses, encrypts and packs chunks; the producer
// (the caller) blocks when `max_inflight_bytes` of data is queued, which bounds memory. A
// full pack is finished (trailer, fsync, rename; on object storage the upload) by finisher
// threads — Env::write_concurrency() of them, one for a local disk — so workers never wait
// on the disk; at most one full pack per finisher waits for them.
// One thread drives a session's calls; different DiskWriters may be fed from different
// threads. workers = 0 processes everything on the caller's thread (deterministic; the
// fault-injection tests use it).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/error.h"
#include "common/work_queue.h"
#include "repo/chunk_map.h"
#include "repo/repository.h"

namespace vmshadow::repo {

struct SessionOptions {
    unsigned workers = 0;  // 0 = inline on the caller's thread; see default_workers()
    std::uint64_t max_inflight_bytes = 64ull << 20;
    std::string operation = "backup";
};
unsigned default_workers();

struct DiskStats {
    std::uint64_t bytes_written = 0;  // data handed to write()
    std::uint64_t chunks_zero = 0;    // stored as holes
    std::uint64_t chunks_same = 0;    // equal to the base point's chunk
    std::uint64_t chunks_known = 0;   // already in the repository
    std::uint64_t chunks_new = 0;     // compressed and stored
    std::uint64_t bytes_new = 0;      // plaintext bytes of new chunks
    std::uint64_t bytes_added = 0;    // stored bytes (chunks + map blocks) this disk added
};

class BackupSession;

class DiskWriter {
  public:
    std::uint32_t chunk_size() const { return chunk_size_; }
    std::uint64_t size() const { return size_; }
    bool has_base() const { return base_.has_value(); }

    Status write(std::uint64_t offset, Bytes data);
    // A buffer of `size` bytes for the next write(), recycled from earlier writes when one
    // is free (contents unspecified): filling it and handing it back avoids allocating and
    // zero-filling fresh memory for every read.
    Bytes buffer(std::size_t size);
    Status zero(std::uint64_t offset, std::uint64_t length);
    Status unchanged(std::uint64_t offset, std::uint64_t length);
    // Waits for this disk's chunks and writes its chunk map.
    Status finish();
    bool finished() const { return finished_; }
    MapRef map() const { return map_; }
    DiskStats stats() const;

    DiskWriter(BackupSession& session, std::string name, std::uint64_t size,
               std::optional<ChunkMap> base, std::uint64_t base_size);

  private:
    friend class BackupSession;
    friend class PointBuilder;
    struct Pending {
        std::vector<Hash256> ids;
        std::uint32_t outstanding = 0;
    };
    Status check_range(std::uint64_t offset, std::uint64_t length, const char* what) const;
    Pending& pending_block(std::uint64_t block);  // needs mu_
    void advance(std::uint64_t cursor);
    void complete(std::uint64_t chunk, const Hash256& id);
    void finalize(std::uint64_t block, std::vector<Hash256> ids);
    std::uint64_t block_end(std::uint64_t block) const;

    BackupSession& session_;
    std::string name_;
    std::uint64_t size_;
    std::uint32_t chunk_size_;
    std::uint32_t fanout_;
    std::uint64_t chunks_;
    std::optional<ChunkMap> base_;
    std::uint64_t base_chunks_ = 0;  // base chunks usable at the same index
    bool base_same_shape_ = false;

    std::mutex mu_;
    std::condition_variable done_cv_;
    std::uint64_t cursor_ = 0;  // chunks below it have all been handed out
    std::map<std::uint64_t, Pending> pending_;
    unsigned finalizing_ = 0;
    std::vector<Hash256> level0_;
    bool finished_ = false;
    MapRef map_;

    std::atomic<std::uint64_t> bytes_written_{0}, chunks_zero_{0}, chunks_same_{0},
        chunks_known_{0}, chunks_new_{0}, bytes_new_{0}, bytes_added_{0};
};

class PointBuilder {
  public:
    PointBuilder(BackupSession& session, std::string vm, std::string consistency);

    // base: the previous restore point of this VM (its disk of the same name is the dedup
    // base and the source of `unchanged` ranges); nullptr for a full backup.
    Result<DiskWriter*> add_disk(const std::string& name, std::uint64_t size,
                                 const RestorePoint* base, nlohmann::json info = {});
    // A VM file (domain XML, NVRAM, memory image…), chunked like a disk. Either stream it
    // through the returned writer, or hand the whole content.
    Result<DiskWriter*> add_file(const std::string& name, const std::string& role,
                                 std::uint64_t size);
    Status add_file(const std::string& name, const std::string& role, ByteView content);

    RestorePoint& manifest() { return point_; }  // metadata, timings, consistency, parent

  private:
    friend class BackupSession;
    BackupSession& session_;
    RestorePoint point_;
    std::vector<std::unique_ptr<DiskWriter>> disks_;
    std::vector<std::pair<FileRecord, std::unique_ptr<DiskWriter>>> files_;
};

class BackupSession {
  public:
    static Result<std::unique_ptr<BackupSession>> begin(Repository& repo,
                                                        const SessionOptions& options);
    ~BackupSession();
    BackupSession(const BackupSession&) = delete;
    BackupSession& operator=(const BackupSession&) = delete;

    PointBuilder& add_point(const std::string& vm, const std::string& consistency);
    // Finishes every disk, writes packs, the index file and the commit record; returns the
    // committed points (ids set).
    Result<std::vector<RestorePoint>> commit();

    Repository& repository() { return repo_; }
    // The first error any worker hit, if any.
    std::optional<Error> error() const;

  private:
    friend class DiskWriter;
    // A run of consecutive chunks of one write(), at most frame_chunks_ long: the chunks
    // of a run that must be stored are compressed together as one frame.
    struct Job {
        DiskWriter* disk;
        std::uint64_t chunk;  // the run's first chunk
        std::shared_ptr<const Bytes> buffer;
        std::size_t offset;  // of the run in buffer
        std::size_t length;
        std::vector<Hash256> bases;  // the base point's id per chunk; empty without a base
    };
    BackupSession(Repository& repo, const SessionOptions& options, std::unique_ptr<RepoLock> lock);
    void submit(Job job);
    void process(const Job& job);
    // Whether this session is the one to store `id`: neither the repository nor an earlier
    // call has it. A claimed id must be stored, or the session fails.
    bool claim(const Hash256& id);
    // Stores a blob unless the repository or this session has it; returns whether stored.
    Result<bool> store_blob(format::BlobType type, const Hash256& id, ByteView plain,
                            DiskWriter& owner);
    // Stores the claimed chunks `fresh` (indexes into the run) of a job: one blob, or one
    // frame holding them all.
    Status store_chunks(const Job& job, const std::vector<Hash256>& ids,
                        const std::vector<std::size_t>& fresh);
    // Runs `add` on the open pack (made when there is none) and retires the pack when full.
    Status append(const std::function<Status(PackWriter&)>& add);
    Status finish_pack(std::unique_ptr<PackWriter> pack);
    // Hands a full pack to the finisher thread (or finishes it inline without workers).
    Status retire_pack(std::unique_ptr<PackWriter> pack);
    void finisher();
    void stop_finisher();
    Bytes take_buffer(std::size_t size);
    void recycle_buffer(Bytes* buffer);
    void set_error(const Error& e);
    bool failed() const { return failed_.load(); }
    void stop_workers();
    // Starts the workers and the finisher (begin() calls it once the object exists).
    Status start_threads();

    Repository& repo_;
    SessionOptions options_;
    std::unique_ptr<RepoLock> lock_;
    std::uint32_t frame_chunks_;
    std::chrono::steady_clock::time_point started_;
    std::vector<std::unique_ptr<PointBuilder>> points_;
    bool committed_ = false;

    // submit() → the workers running process(); holds max_inflight_bytes at the most.
    WorkQueue<Job> queue_;

    mutable std::mutex error_mu_;
    std::optional<Error> error_;
    std::atomic<bool> failed_{false};

    std::mutex known_mu_;
    std::unordered_set<Hash256, Hash256Hasher> stored_;
    std::mutex pack_mu_;
    std::unique_ptr<PackWriter> pack_;
    std::mutex finished_mu_;
    std::vector<PackInfo> finished_packs_;

    std::mutex finisher_mu_;
    std::condition_variable finisher_cv_, finisher_space_cv_;
    std::deque<std::unique_ptr<PackWriter>> full_packs_;
    bool finisher_stopping_ = false;
    std::vector<std::thread> finishers_;

    std::mutex buffers_mu_;
    std::vector<Bytes> free_buffers_;  // oldest first
    std::uint64_t pooled_bytes_ = 0;
};

}  // namespace vmshadow::repo
