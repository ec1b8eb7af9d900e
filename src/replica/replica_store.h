// SPDX-License-Identifier: MIT
#pragma once
// ReplicaStore: one replicated VM's files on the replica host — a base image per disk plus
// one qcow2 overlay per recovery point, as Hyper-V keeps a VHDX plus AVHDX recovery points.
//
// Layout of <storage>/<vm name>-<uuid first 8>/ (the storage folder is the allow-list entry's):
//   replica.json          the record, replaced atomically (common/atomic_file.h); the ONLY
//                         thing that says which layers and points exist
//   p<seq>-<target>.qcow2 the layer of point <seq> for one disk: seq 0 (and a full cycle's
//                         base) has no backing file (adopt: the image, by absolute path);
//                         seq n is a qcow2 overlay whose backing file (a relative name,
//                         backing format qcow2) is the previous point's layer. After pruning
//                         a point may name an older file (the base its layer was merged into)
//   test-<target>.qcow2   the test failover's overlay above its point (while a test runs)
//   live-<target>.qcow2   the failed-over VM's overlay above the chosen point
// Any p-/test-/live- file the record does not name is a leftover of a cycle or an operation
// cut off halfway (a killed daemon, a lost connection) and is deleted by open(): a cycle is
// visible only once commit_cycle() replaced the record, never half-applied.
//
// Cycles: begin_cycle() creates each disk's new layer above the latest point (or fresh base
// images for a full/initial cycle, at the sizes given) and serves them writable with qemu-nbd
// (engine/nbd_image.h); write()/zero() put extents into them; commit_cycle() flushes, stops
// the servers, and replaces the record with the new point appended (then prune); abort (or
// destruction of an uncommitted Cycle) deletes the new layers. One cycle at a time per store;
// a Cycle ends before its store is destroyed. A committed full cycle replaces every older
// point (its base images have no backing file). No cycle while live overlays exist.
//
// Recovery points: the newest plus up to `history` (0..24) earlier ones; once there are more,
// the oldest are merged away first: the record drops the oldest point, the next-oldest layer
// is committed into the base (qemu-img commit), the layer above it rebased onto the base
// (qemu-img rebase -u: its data is unchanged), the record updated, the merged layer deleted —
// a crash at any step leaves every recorded point readable with its recorded content, because
// a commit only copies into the base what the layer above already shadows, and no recorded
// point has the base as its top by then (replica_cycle.cpp tells the order). A point pinned by
// a running test failover or by the failed-over VM is never merged away: pruning waits while
// any test or live overlays exist.
//
// Reading a point: block hashes of a disk at the latest point (for resync) through qemu-nbd
// read-only on its top layer; the chain of layer paths of any point (for failover overlays).
//
// Thread-safety: one thread at a time per ReplicaStore (the replica service holds a mutex per
// VM); two processes never open one store (a flock on <folder>/.lock, conflict naming holder).
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"

namespace vmshadow::replica {

inline constexpr unsigned kMaxHistory = 24;

struct StoreDisk {
    std::string target;  // "vda"
    std::uint64_t size = 0;
};

struct RecoveryPoint {
    std::uint64_t seq = 0;            // 0 = the initial copy; grows by one per cycle
    std::string token;                // the primary's checkpoint this point equals
    std::string time;                 // ISO 8601 UTC: the instant the primary read
    std::string consistency;          // "application" | "crash"
    std::vector<std::string> layers;  // one file name per disk, in disks() order
};

struct StoreIdentity {
    std::string vm_name;
    std::string vm_uuid;
    std::string primary_subject;   // certificate subject of the primary
    std::string primary_endpoint;  // "host:port" of the primary's replica listener (reverse)
    std::string domain_xml;        // the primary's inactive domain XML (for failover)
    std::vector<StoreDisk> disks;
    unsigned history = 4;
};

struct CycleHeader {
    std::string id;           // the primary's cycle id (hex)
    std::string base_token;   // "" for a full cycle (initial copy or resync-with-sizes-change)
    std::string token;        // the checkpoint this cycle's point will equal
    std::string time;         // ISO 8601 UTC
    std::string consistency;  // "application" | "crash"
    bool full = false;        // new base images (initial replication)
};

class ReplicaStore {
  public:
    // Opens an existing store (removing leftovers); not_found when `folder` has no record.
    static Result<std::unique_ptr<ReplicaStore>> open(const std::filesystem::path& folder);
    // Creates the folder and an empty record (no points yet); conflict when one exists for
    // another VM uuid; an existing store of the same uuid is opened and its identity updated.
    static Result<std::unique_ptr<ReplicaStore>> create(const std::filesystem::path& folder,
                                                        const StoreIdentity& identity);
    // Adopts existing disk images as point 0 without copying them (reverse replication: the
    // old primary's disks become the base; each gets a p0-<target>.qcow2 overlay whose
    // backing file is the image, by absolute path, of its probed format; the image itself is
    // only ever read: pruning merges into the p0 overlays). The image sizes must be the
    // identity's; conflict when `folder` holds a store already.
    static Result<std::unique_ptr<ReplicaStore>> adopt(
        const std::filesystem::path& folder, const StoreIdentity& identity,
        const std::vector<std::filesystem::path>& images, const std::string& token,
        const std::string& time);
    ~ReplicaStore();

    // Seeding (initial replication from a repository restore point): takes qcow2 images
    // without a backing file (restored into this store's folder, one per disk in identity
    // order, at the identity's sizes) as the base of point 0 — renamed to p0-<target>.qcow2,
    // then the record replaced. Only while the store has no point and no cycle runs
    // (conflict); a size or format that differs is invalid_argument and nothing is recorded.
    Status seed(const std::vector<std::filesystem::path>& images, const std::string& token,
                const std::string& time);

    const StoreIdentity& identity() const;
    Status set_history(unsigned history);
    const std::vector<RecoveryPoint>& points() const;  // oldest first
    const RecoveryPoint* latest() const;
    const RecoveryPoint* find(std::uint64_t seq) const;
    const std::filesystem::path& folder() const;
    // Absolute paths of the layers of point `seq` for disk index `disk`, top first.
    Result<std::vector<std::filesystem::path>> chain(std::uint64_t seq, std::size_t disk) const;

    // Whether a cycle that starts at `base_token` can be applied: a full cycle always; an
    // incremental one when base_token is the token of the latest point or of an earlier point
    // still held (changes since an older checkpoint include the newer ones: a cycle whose
    // acknowledgement was lost is simply sent again, larger); an empty base_token without
    // `full` is a resync's differences against the latest point (its block_hashes). Every
    // error is ErrorKind::conflict "resync required: ..." (the replica's latest point is
    // <token>; or no point yet; or the disks changed since the latest point — the disk sizes
    // a point was written at must be identity()'s, else only a full cycle applies).
    Status can_apply(const CycleHeader& header) const;

    class Cycle {
      public:
        virtual ~Cycle() = default;
        virtual Status write(std::size_t disk, std::uint64_t offset,
                             std::span<const std::byte> data) = 0;
        virtual Status zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) = 0;
        // Flushes, records the new point, prunes; the Cycle is spent afterwards.
        virtual Result<RecoveryPoint> commit() = 0;
        virtual void abort() = 0;
    };
    Result<std::unique_ptr<Cycle>> begin_cycle(const CycleHeader& header);

    // SHA-256 of each `block_size` block of disk `disk` at the latest point, for blocks
    // [first, first + count) (the last block may be short; count is clamped at the disk's
    // end). block_size a power of two, 64 KiB..4 MiB; count ≤ 65536.
    Result<std::vector<std::array<std::byte, 32>>> block_hashes(std::size_t disk,
                                                                std::uint64_t block_size,
                                                                std::uint64_t first,
                                                                std::uint64_t count) const;

    // Failover overlays. kind "test" or "live": makes <kind>-<target>.qcow2 above point `seq`
    // for every disk, pins the point, records it; returns the overlay paths in disk order.
    Result<std::vector<std::filesystem::path>> make_overlays(const std::string& kind,
                                                             std::uint64_t seq);
    // Deletes the overlays of `kind` and unpins (stop-test; cancel of a failover).
    Status drop_overlays(const std::string& kind);
    // After a failover is committed: forgets every point but `seq` and the layers only other
    // points used (the VM runs on the live overlays; layers below `seq` stay as its backing).
    Status commit_failover(std::uint64_t seq);

    // Free-form state the replica service keeps in the record ("replicating", "test-failover",
    // "failed-over", ...) with the record's atomic replace.
    const std::string& state() const;
    Status set_state(const std::string& state);

    struct Impl;

  private:
    explicit ReplicaStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vmshadow::replica
