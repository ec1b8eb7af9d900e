// SPDX-License-Identifier: MIT
// ReplicaStore's cycles (a new layer written through qemu-nbd, made a point by one record
// replace), pruning of old points, and block hashes of the latest point.
#include <openssl/evp.h>

#include <algorithm>
#include <bit>

#include "engine/nbd_image.h"
#include "replica/replica_layers.h"
#include "replica/replica_store.h"
#include "replica/replica_store_impl.h"

namespace vmshadow::replica {
namespace {

namespace fs = std::filesystem;
using detail::StoreRecord;

std::vector<std::uint64_t> identity_sizes(const StoreIdentity& id) {
    std::vector<std::uint64_t> sizes;
    for (const auto& d : id.disks) sizes.push_back(d.size);
    return sizes;
}

class StoreCycle final : public ReplicaStore::Cycle {
  public:
    StoreCycle(ReplicaStore::Impl& store, CycleHeader header, std::uint64_t seq)
        : store_(store), header_(std::move(header)), seq_(seq) {
        store_.cycle_active = true;
    }
    ~StoreCycle() override { abort(); }

    // Creates the new layers and serves them writable.
    Status start();
    Status write(std::size_t disk, std::uint64_t offset, std::span<const std::byte> data) override;
    Status zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) override;
    Result<RecoveryPoint> commit() override;
    void abort() override;

  private:
    Status check(std::size_t disk, std::uint64_t offset, std::uint64_t length) const;
    Status stop_servers();

    ReplicaStore::Impl& store_;
    CycleHeader header_;
    std::uint64_t seq_;
    bool spent_ = false;
    detail::LayerSet layers_;
    std::vector<std::unique_ptr<engine::QemuNbdServer>> servers_;
    std::vector<std::unique_ptr<engine::NbdConnection>> connections_;
};

Status StoreCycle::start() {
    const StoreRecord& r = store_.record;
    const auto& disks = r.identity.disks;
    for (std::size_t d = 0; d < disks.size(); ++d) {
        const std::string name = detail::layer_name(seq_, disks[d].target);
        const fs::path file = store_.path_of(name);
        std::error_code ec;
        fs::remove(file, ec);  // not in the record (start() checked): a leftover
        layers_.files.push_back(name);
        layers_.sizes.push_back(disks[d].size);
        auto made = header_.full ? detail::create_base_layer(file, disks[d].size)
                                 : detail::create_overlay(file, r.stack.back().files[d], "qcow2");
        if (!made) return made;
        auto server = engine::QemuNbdServer::start(
            {.image = file.string(), .format = "qcow2", .read_only = false, .connections = 1});
        if (!server) return fail(server.error());
        servers_.push_back(std::move(*server));
        auto connection = engine::NbdConnection::connect_unix(servers_.back()->socket(), false);
        if (!connection) return fail(connection.error().with_context("serve " + file.string()));
        if ((*connection)->size() != disks[d].size)
            return fail(ErrorKind::internal,
                        file.string() + " is not of disk " + disks[d].target + "'s size");
        connections_.push_back(std::move(*connection));
    }
    return {};
}

Status StoreCycle::check(std::size_t disk, std::uint64_t offset, std::uint64_t length) const {
    if (spent_) return fail(ErrorKind::internal, "replica cycle " + header_.id + " has ended");
    if (disk >= connections_.size())
        return fail(ErrorKind::invalid_argument,
                    "replica cycle " + header_.id + ": no disk " + std::to_string(disk));
    const std::uint64_t size = layers_.sizes[disk];
    if (offset > size || length > size - offset)
        return fail(ErrorKind::invalid_argument, "replica cycle " + header_.id + ": extent at " +
                                                     std::to_string(offset) + " of disk " +
                                                     std::to_string(disk) + " ends past its end");
    return {};
}

Status StoreCycle::write(std::size_t disk, std::uint64_t offset, std::span<const std::byte> data) {
    if (auto ok = check(disk, offset, data.size()); !ok) return ok;
    return connections_[disk]->pwrite(data.data(), data.size(), offset);
}

Status StoreCycle::zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) {
    if (auto ok = check(disk, offset, length); !ok) return ok;
    return connections_[disk]->zero(offset, length);
}

Status StoreCycle::stop_servers() {
    Status result;
    connections_.clear();
    for (auto& s : servers_)
        if (auto ok = s->stop(); !ok && result) result = ok;
    servers_.clear();
    return result;
}

Result<RecoveryPoint> StoreCycle::commit() {
    if (spent_) return fail(ErrorKind::internal, "replica cycle " + header_.id + " has ended");
    for (auto& c : connections_)
        if (auto ok = c->flush(); !ok) {
            abort();
            return fail(ok.error().with_context("replica cycle " + header_.id));
        }
    // A server that had to be killed may not have written everything: the layer is not used.
    if (auto ok = stop_servers(); !ok) {
        abort();
        return fail(ok.error().with_context("replica cycle " + header_.id));
    }
    StoreRecord next = store_.record;
    std::vector<std::string> replaced;  // a full cycle's new base replaces every older layer
    if (header_.full) {
        for (const auto& l : next.stack)
            replaced.insert(replaced.end(), l.files.begin(), l.files.end());
        next.stack.clear();
        next.points.clear();
    }
    RecoveryPoint point{seq_, header_.token, header_.time, header_.consistency, layers_.files};
    next.stack.push_back(layers_);
    next.points.push_back(point);
    next.next_seq = seq_ + 1;
    if (auto ok = store_.save(std::move(next)); !ok) {
        abort();
        return fail(ok.error());
    }
    spent_ = true;
    store_.cycle_active = false;
    store_.remove_files(replaced);
    // The point is committed whatever pruning does: a prune that fails here (a full disk) is
    // finished by the next commit, and every point stays readable meanwhile.
    (void)store_.prune();
    return point;
}

void StoreCycle::abort() {
    if (spent_) return;
    spent_ = true;
    (void)stop_servers();
    store_.remove_files(layers_.files);
    store_.cycle_active = false;
}

}  // namespace

Status ReplicaStore::can_apply(const CycleHeader& header) const {
    if (header.full) return {};
    const StoreRecord& r = impl_->record;
    const RecoveryPoint* last = latest();
    if (!last)
        return fail(ErrorKind::conflict, "resync required: the replica of VM '" +
                                             r.identity.vm_name +
                                             "' holds no recovery point yet; send a full cycle");
    const detail::LayerSet& top = r.stack.back();
    if (top.sizes != identity_sizes(r.identity))
        return fail(ErrorKind::conflict, "resync required: the disks of VM '" + r.identity.vm_name +
                                             "' changed since point " + std::to_string(last->seq) +
                                             "; send a full cycle");
    // No base token: a resync's differences against the latest point (its block hashes).
    if (header.base_token.empty()) return {};
    bool held = std::any_of(r.points.begin(), r.points.end(), [&](const RecoveryPoint& p) {
        return !p.token.empty() && p.token == header.base_token;
    });
    if (!held)
        return fail(ErrorKind::conflict,
                    "resync required: the replica's latest point is " + last->token);
    return {};
}

Result<std::unique_ptr<ReplicaStore::Cycle>> ReplicaStore::begin_cycle(const CycleHeader& header) {
    const StoreRecord& r = impl_->record;
    if (impl_->cycle_active)
        return fail(ErrorKind::conflict,
                    "replica of VM '" + r.identity.vm_name + "' is applying another cycle");
    if (auto ok = can_apply(header); !ok) return fail(ok.error());
    if (r.overlays.contains("live") || (header.full && !r.overlays.empty()))
        return fail(ErrorKind::conflict,
                    "replica of VM '" + r.identity.vm_name + "' runs a " +
                        (r.overlays.contains("live") ? "failed-over VM" : "test failover") +
                        " on its points: cycle " + header.id + " refused");
    std::uint64_t seq = r.next_seq;
    for (const auto& p : r.points) seq = std::max(seq, p.seq + 1);
    for (const auto& l : r.stack)
        for (const auto& f : l.files)
            for (const auto& d : r.identity.disks)
                if (f == detail::layer_name(seq, d.target))
                    return fail(ErrorKind::internal, "replica layer " + f + " exists already");
    auto cycle = std::make_unique<StoreCycle>(*impl_, header, seq);
    if (auto ok = cycle->start(); !ok)
        return fail(ok.error().with_context("replica cycle " + header.id));
    return std::unique_ptr<Cycle>(std::move(cycle));
}

// Pruning merges the oldest layer set away, one step at a time, in this order (crash-safe:
// every recorded point reads its recorded content after a crash at any instant):
//   1. the record drops the oldest point (its layer set stays, now below the next point: a
//      merge pending — the next prune resumes here);
//   2. `qemu-img commit -d` of the next layer set L1 into the base L0: L0 changes only where
//      L1 shadows it, so L1 and everything above read as before, and no recorded point has
//      L0 as its top any more (step 1);
//   3. `qemu-img rebase -u` of the set above L1 (if any) onto L0: L0 now reads as L1 over
//      L0 did, so that layer's content is unchanged (and rebasing again is harmless);
//   4. the record names L0's files for L1's point and forgets L1;
//   5. L1's files are deleted (a crash before: leftovers, which open() removes).
// While test or live overlays exist nothing is merged: a running VM holds the chain open
// (qemu's image locks), and its point must stay as it was.
Status ReplicaStore::Impl::prune() {
    for (;;) {
        if (!record.overlays.empty()) return {};
        const bool merge_pending =
            record.stack.size() >= 2 &&
            (record.points.empty() || detail::stack_index(record, record.points.front()) != 0);
        if (!merge_pending) {
            if (record.points.size() <= record.identity.history + 1u) return {};
            StoreRecord next = record;
            next.points.erase(next.points.begin());
            if (auto ok = save(std::move(next)); !ok) return ok;
            continue;
        }
        const detail::LayerSet base = record.stack[0], merged = record.stack[1];
        for (const auto& f : merged.files)
            if (auto ok = detail::commit_into_backing(path_of(f)); !ok) return ok;
        if (record.stack.size() >= 3)
            for (std::size_t d = 0; d < base.files.size(); ++d)
                if (auto ok =
                        detail::rebase_unsafe(path_of(record.stack[2].files[d]), base.files[d]);
                    !ok)
                    return ok;
        StoreRecord next = record;
        for (auto& p : next.points)
            if (p.layers == merged.files) p.layers = base.files;
        next.stack.erase(next.stack.begin() + 1);
        if (auto ok = save(std::move(next)); !ok) return ok;
        remove_files(merged.files);
    }
}

Result<std::vector<std::array<std::byte, 32>>> ReplicaStore::block_hashes(
    std::size_t disk, std::uint64_t block_size, std::uint64_t first, std::uint64_t count) const {
    const RecoveryPoint* last = latest();
    if (!last)
        return fail(ErrorKind::not_found,
                    "replica of VM '" + identity().vm_name + "' holds no recovery point");
    if (disk >= last->layers.size())
        return fail(ErrorKind::invalid_argument, "no disk " + std::to_string(disk));
    if (!std::has_single_bit(block_size) || block_size < (64u << 10) || block_size > (4u << 20))
        return fail(ErrorKind::invalid_argument, "block size " + std::to_string(block_size) +
                                                     ": a power of two from 64 KiB to 4 MiB");
    if (count > 65536)
        return fail(ErrorKind::invalid_argument, "at most 65536 block hashes at a time");
    const std::uint64_t size = impl_->record.stack.back().sizes[disk];
    const std::uint64_t blocks = (size + block_size - 1) / block_size;
    if (first > blocks)
        return fail(ErrorKind::invalid_argument, "block " + std::to_string(first) +
                                                     " is past the disk's " +
                                                     std::to_string(blocks) + " blocks");
    count = std::min(count, blocks - first);
    const fs::path top = impl_->path_of(last->layers[disk]);
    auto server = engine::QemuNbdServer::start(
        {.image = top.string(), .format = "qcow2", .read_only = true, .connections = 1});
    if (!server) return fail(server.error());
    auto connection = engine::NbdConnection::connect_unix((*server)->socket(), true);
    if (!connection) return fail(connection.error().with_context("serve " + top.string()));
    auto hash = [](const std::byte* data, std::size_t n) {
        std::array<std::byte, 32> h{};
        unsigned int len = 0;
        (void)EVP_Digest(data, n, reinterpret_cast<unsigned char*>(h.data()), &len, EVP_sha256(),
                         nullptr);
        return h;
    };
    std::vector<std::array<std::byte, 32>> hashes;
    hashes.reserve(count);
    // Whole blocks in batches of about 4 MiB (pread keeps many requests in flight); a batch
    // the allocation map says reads as zeros is not read at all.
    const std::uint64_t batch_blocks = std::max<std::uint64_t>(1, (4u << 20) / block_size);
    std::vector<std::byte> buffer(batch_blocks * block_size);
    for (std::uint64_t b = first; b < first + count; b += batch_blocks) {
        const std::uint64_t at = b * block_size;
        const std::uint64_t blocks_here = std::min(batch_blocks, first + count - b);
        const std::size_t n = std::min(blocks_here * block_size, size - at);
        auto extents = (*connection)->extents(at, n);
        if (!extents) return fail(extents.error().with_context("read " + top.string()));
        const bool all_zero = extents->size() == 1 && extents->front().zero &&
                              extents->front().offset == at && extents->front().length >= n;
        if (all_zero) {
            std::fill_n(buffer.begin(), n, std::byte{0});
        } else if (auto ok = (*connection)->pread(buffer.data(), n, at); !ok) {
            return fail(ok.error().with_context("read " + top.string()));
        }
        for (std::uint64_t i = 0; i < blocks_here; ++i) {
            const std::size_t from = i * block_size;
            hashes.push_back(
                hash(buffer.data() + from, std::min<std::size_t>(block_size, n - from)));
        }
    }
    return hashes;
}

}  // namespace vmshadow::replica
