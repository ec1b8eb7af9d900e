// SPDX-License-Identifier: MIT
// DiskWriter (backup_session.h): one disk's ranges turned into chunk jobs, and its chunk map
// (blocks of ids, then the levels above them) once every chunk is stored.
#include <algorithm>
#include <cstring>

#include "repo/backup_session.h"
#include "repo/format.h"

namespace vmshadow::repo {
namespace {

Bytes encode_block(const std::vector<Hash256>& ids) {
    Bytes out(ids.size() * 32);
    for (std::size_t i = 0; i < ids.size(); ++i)
        std::memcpy(out.data() + i * 32, ids[i].bytes.data(), 32);
    return out;
}

bool all_holes(const std::vector<Hash256>& ids) {
    return std::all_of(ids.begin(), ids.end(), [](const Hash256& h) { return h.is_zero(); });
}

}  // namespace

DiskWriter::DiskWriter(BackupSession& session, std::string name, std::uint64_t size,
                       std::optional<ChunkMap> base, std::uint64_t base_size)
    : session_(session),
      name_(std::move(name)),
      size_(size),
      chunk_size_(session.repository().config().chunk_size),
      fanout_(session.repository().config().map_fanout),
      base_(std::move(base)) {
    auto counts = map_level_counts(size_, chunk_size_, fanout_);
    chunks_ = counts[0];
    level0_.assign(counts[1], kHoleId);
    if (base_) {
        // A base chunk can stand for ours only where both cover a whole chunk.
        base_same_shape_ = base_size == size_;
        base_chunks_ = base_same_shape_ ? base_->chunk_count() : base_size / chunk_size_;
    }
}

DiskStats DiskWriter::stats() const {
    return DiskStats{bytes_written_, chunks_zero_, chunks_same_, chunks_known_,
                     chunks_new_,    bytes_new_,   bytes_added_};
}

std::uint64_t DiskWriter::block_end(std::uint64_t block) const {
    return std::min<std::uint64_t>((block + 1) * fanout_, chunks_);
}

Status DiskWriter::check_range(std::uint64_t offset, std::uint64_t length, const char* what) const {
    auto bad = [&](const std::string& why) {
        return fail(ErrorKind::internal, std::string("disk ") + name_ + ": " + what + "(" +
                                             std::to_string(offset) + ", " +
                                             std::to_string(length) + "): " + why);
    };
    if (finished_) return bad("disk already finished");
    if (offset % chunk_size_) return bad("offset is not chunk-aligned");
    if (offset > size_ || length > size_ - offset) return bad("range passes the disk's end");
    if ((offset + length) % chunk_size_ && offset + length != size_)
        return bad("length is not chunk-aligned");
    if (offset / chunk_size_ < cursor_) return bad("ranges must ascend and not overlap");
    return {};
}

DiskWriter::Pending& DiskWriter::pending_block(std::uint64_t block) {
    auto [it, inserted] = pending_.try_emplace(block);
    if (inserted) it->second.ids.assign(block_end(block) - block * fanout_, kHoleId);
    return it->second;
}

Status DiskWriter::write(std::uint64_t offset, Bytes data) {
    if (auto e = session_.error()) return fail(*e);
    if (auto st = check_range(offset, data.size(), "write"); !st) return st;
    if (data.empty()) return {};
    BackupSession* session = &session_;
    std::shared_ptr<const Bytes> buffer(new Bytes(std::move(data)), [session](const Bytes* b) {
        session->recycle_buffer(const_cast<Bytes*>(b));
    });
    std::uint64_t first = offset / chunk_size_;
    std::uint64_t n = (buffer->size() + chunk_size_ - 1) / chunk_size_;
    bytes_written_ += buffer->size();
    {
        std::lock_guard lock(mu_);
        cursor_ = first;  // the gap before is holes
        for (std::uint64_t i = 0; i < n; ++i) pending_block((first + i) / fanout_).outstanding++;
    }
    // Runs end on multiples of frame_chunks_ (absolute chunk indexes), so frames line up with
    // the aligned runs a restore reads (restore.cpp) and each is decoded once.
    const std::uint64_t per_job = session_.frame_chunks_;
    for (std::uint64_t i = 0, count = 0; i < n; i += count) {
        count = std::min(per_job - (first + i) % per_job, n - i);
        std::size_t off = i * chunk_size_;
        std::size_t len = std::min<std::size_t>(count * chunk_size_, buffer->size() - off);
        BackupSession::Job job{this, first + i, buffer, off, len, {}};
        if (base_) {
            job.bases.assign(count, kHoleId);
            for (std::uint64_t k = 0; k < count; ++k) {
                std::uint64_t chunk = first + i + k;
                if (chunk >= base_chunks_) break;
                auto id = base_->chunk_id(chunk);
                if (!id) {
                    session_.set_error(id.error().with_context("base point, disk " + name_));
                    break;
                }
                job.bases[k] = *id;
            }
        }
        session_.submit(std::move(job));
    }
    advance(first + n);
    if (auto e = session_.error()) return fail(*e);
    return {};
}

Bytes DiskWriter::buffer(std::size_t size) {
    return session_.take_buffer(size);
}

Status DiskWriter::zero(std::uint64_t offset, std::uint64_t length) {
    if (auto st = check_range(offset, length, "zero"); !st) return st;
    if (length == 0) return {};
    advance((offset + length + chunk_size_ - 1) / chunk_size_);
    return {};
}

Status DiskWriter::unchanged(std::uint64_t offset, std::uint64_t length) {
    if (auto st = check_range(offset, length, "unchanged"); !st) return st;
    if (!base_)
        return fail(ErrorKind::internal, "disk " + name_ + ": `unchanged` without a base point");
    std::uint64_t chunk = offset / chunk_size_;
    std::uint64_t end = (offset + length + chunk_size_ - 1) / chunk_size_;
    while (chunk < end) {
        std::uint64_t block = chunk / fanout_;
        bool whole_block = chunk % fanout_ == 0 && block_end(block) <= end &&
                           block_end(block) == (block + 1) * fanout_ &&
                           (block + 1) * fanout_ <= base_chunks_;
        if (whole_block) {
            std::lock_guard lock(mu_);
            whole_block = !pending_.contains(block);
        }
        if (whole_block) {
            // Reuse the base's map block as is: unchanged regions share metadata.
            auto id = base_->entry(1, block);
            if (!id) return std::unexpected(id.error().with_context("base point, disk " + name_));
            std::lock_guard lock(mu_);
            level0_[block] = *id;
            chunks_same_ += fanout_;
            chunk += fanout_;
            continue;
        }
        Hash256 id = kHoleId;
        if (chunk < base_chunks_) {
            auto got = base_->chunk_id(chunk);
            if (!got) return std::unexpected(got.error().with_context("base point, disk " + name_));
            id = *got;
        }
        {
            std::lock_guard lock(mu_);
            pending_block(block).ids[chunk % fanout_] = id;
        }
        ++chunks_same_;
        ++chunk;
    }
    advance(end);
    return {};
}

void DiskWriter::advance(std::uint64_t cursor) {
    std::vector<std::pair<std::uint64_t, std::vector<Hash256>>> ready;
    {
        std::lock_guard lock(mu_);
        cursor_ = std::max(cursor_, cursor);
        for (auto it = pending_.begin(); it != pending_.end() && block_end(it->first) <= cursor_;) {
            if (it->second.outstanding == 0) {
                ready.emplace_back(it->first, std::move(it->second.ids));
                it = pending_.erase(it);
                ++finalizing_;
            } else {
                ++it;
            }
        }
    }
    for (auto& [block, ids] : ready) finalize(block, std::move(ids));
}

void DiskWriter::complete(std::uint64_t chunk, const Hash256& id) {
    std::uint64_t block = chunk / fanout_;
    std::vector<Hash256> ids;
    {
        std::lock_guard lock(mu_);
        Pending& p = pending_.at(block);
        p.ids[chunk % fanout_] = id;
        if (--p.outstanding > 0 || block_end(block) > cursor_) return;
        ids = std::move(p.ids);
        pending_.erase(block);
        ++finalizing_;
    }
    finalize(block, std::move(ids));
}

void DiskWriter::finalize(std::uint64_t block, std::vector<Hash256> ids) {
    Hash256 id = kHoleId;
    if (!all_holes(ids) && !session_.failed()) {
        Bytes bytes = encode_block(ids);
        id = session_.repo_.codec().id_of(bytes);
        if (auto stored = session_.store_blob(format::BlobType::tree, id, bytes, *this); !stored)
            session_.set_error(stored.error().with_context("disk " + name_));
    }
    std::lock_guard lock(mu_);
    level0_[block] = id;
    --finalizing_;
    if (pending_.empty() && finalizing_ == 0) done_cv_.notify_all();
}

Status DiskWriter::finish() {
    if (finished_) return {};
    advance(chunks_);
    {
        std::unique_lock lock(mu_);
        done_cv_.wait(lock, [&] { return pending_.empty() && finalizing_ == 0; });
    }
    if (auto e = session_.error()) return fail(*e);
    std::vector<Hash256> level = level0_;
    std::uint32_t levels = 1;
    while (level.size() > 1) {
        std::vector<Hash256> next;
        for (std::size_t i = 0; i < level.size(); i += fanout_) {
            std::vector<Hash256> ids(
                level.begin() + i,
                level.begin() + std::min<std::size_t>(i + fanout_, level.size()));
            if (all_holes(ids)) {
                next.push_back(kHoleId);
                continue;
            }
            Bytes bytes = encode_block(ids);
            Hash256 id = session_.repo_.codec().id_of(bytes);
            auto stored = session_.store_blob(format::BlobType::tree, id, bytes, *this);
            if (!stored) return std::unexpected(stored.error().with_context("disk " + name_));
            next.push_back(id);
        }
        level = std::move(next);
        ++levels;
    }
    map_ = MapRef{level.empty() ? kHoleId : level[0], levels};
    finished_ = true;
    return {};
}

}  // namespace vmshadow::repo
