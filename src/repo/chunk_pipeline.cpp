// SPDX-License-Identifier: MIT
// The chunk pipeline of a BackupSession (backup_session.h): jobs queued by DiskWriters, the
// workers that hash, dedup, compress, encrypt and append chunks to packs, and the full packs
// handed to the finisher.
#include <algorithm>
#include <cstring>

#include "repo/backup_session.h"
#include "repo/format.h"

namespace vmshadow::repo {
namespace {

bool all_zero(const std::uint8_t* p, std::size_t n) {
    // Word-wise scan; the compiler vectorises it. Most chunks fail within the first words.
    std::size_t words = n / 8;
    for (std::size_t i = 0; i < words; ++i) {
        std::uint64_t w;
        std::memcpy(&w, p + i * 8, 8);
        if (w) return false;
    }
    for (std::size_t i = words * 8; i < n; ++i)
        if (p[i]) return false;
    return true;
}

}  // namespace

void BackupSession::submit(Job job) {
    if (!queue_.has_workers()) {
        process(job);
        return;
    }
    queue_.push(std::move(job));
}

void BackupSession::process(const Job& job) {
    DiskWriter& disk = *job.disk;
    const std::size_t cs = disk.chunk_size_;
    const std::size_t count = (job.length + cs - 1) / cs;
    std::vector<Hash256> ids(count, kHoleId);
    std::vector<std::size_t> fresh;
    // After a failure nothing more is stored; the slots are still released so finish()
    // returns.
    for (std::size_t i = 0; i < count && !failed(); ++i) {
        const std::uint8_t* data = job.buffer->data() + job.offset + i * cs;
        std::size_t len = std::min(cs, job.length - i * cs);
        if (all_zero(data, len)) {
            ++disk.chunks_zero_;
            continue;
        }
        ids[i] = repo_.codec().id_of(ByteView(data, len));
        if (!job.bases.empty() && ids[i] == job.bases[i]) {
            ++disk.chunks_same_;  // unchanged since the base point: not compressed, not stored
        } else if (claim(ids[i])) {
            fresh.push_back(i);
        } else {
            ++disk.chunks_known_;
        }
    }
    if (!fresh.empty() && !failed())
        if (auto st = store_chunks(job, ids, fresh); !st)
            set_error(st.error().with_context("disk " + disk.name_));
    for (std::size_t i = 0; i < count; ++i) disk.complete(job.chunk + i, ids[i]);
}

bool BackupSession::claim(const Hash256& id) {
    std::lock_guard lock(known_mu_);
    return !repo_.index().contains(id) && stored_.insert(id).second;
}

Status BackupSession::store_chunks(const Job& job, const std::vector<Hash256>& ids,
                                   const std::vector<std::size_t>& fresh) {
    DiskWriter& disk = *job.disk;
    const std::size_t cs = disk.chunk_size_;
    auto chunk_view = [&](std::size_t i) {
        return ByteView(job.buffer->data() + job.offset + i * cs,
                        std::min(cs, job.length - i * cs));
    };
    // Per-thread buffers: a fresh megabyte per frame would cost more than it carries.
    thread_local Bytes stored, gathered;
    stored.clear();
    if (fresh.size() == 1) {
        ByteView plain = chunk_view(fresh[0]);
        const Hash256& id = ids[fresh[0]];
        bool compressed = repo_.codec().encode_blob(id, plain, stored);
        if (auto st = append([&](PackWriter& pack) {
                return pack.add(id, format::BlobType::data, stored, compressed,
                                static_cast<std::uint32_t>(plain.size()));
            });
            !st)
            return st;
    } else {
        // The chunks to store are most often one contiguous range of the buffer; otherwise
        // (known or unchanged chunks between them) they are gathered.
        ByteView plain;
        if (fresh.back() - fresh.front() + 1 == fresh.size()) {
            ByteView first = chunk_view(fresh.front());
            ByteView last = chunk_view(fresh.back());
            plain = ByteView(first.data(),
                             static_cast<std::size_t>(last.data() + last.size() - first.data()));
        } else {
            gathered.clear();
            for (std::size_t i : fresh) {
                ByteView c = chunk_view(i);
                gathered.insert(gathered.end(), c.begin(), c.end());
            }
            plain = gathered;
        }
        std::vector<FrameMember> members;
        members.reserve(fresh.size());
        std::uint32_t at = 0;
        for (std::size_t i : fresh) {
            auto len = static_cast<std::uint32_t>(chunk_view(i).size());
            members.push_back(FrameMember{ids[i], at, len});
            at += len;
        }
        bool compressed = repo_.codec().encode_frame(plain, stored);
        if (auto st = append([&](PackWriter& pack) {
                return pack.add_frame(format::BlobType::data, stored, compressed,
                                      static_cast<std::uint32_t>(plain.size()), members);
            });
            !st)
            return st;
    }
    std::uint64_t plain_bytes = 0;
    for (std::size_t i : fresh) plain_bytes += chunk_view(i).size();
    disk.chunks_new_ += fresh.size();
    disk.bytes_new_ += plain_bytes;
    disk.bytes_added_ += stored.size() + fresh.size() * entry_size(repo_.pack_version());
    return {};
}

Result<bool> BackupSession::store_blob(format::BlobType type, const Hash256& id, ByteView plain,
                                       DiskWriter& owner) {
    if (!claim(id)) return false;
    Bytes stored;
    stored.reserve(plain.size() + kGcmOverhead);
    bool compressed = repo_.codec().encode_blob(id, plain, stored);
    if (auto st = append([&](PackWriter& pack) {
            return pack.add(id, type, stored, compressed, static_cast<std::uint32_t>(plain.size()));
        });
        !st)
        return std::unexpected(st.error());
    owner.bytes_added_ += stored.size() + entry_size(repo_.pack_version());
    return true;
}

Status BackupSession::append(const std::function<Status(PackWriter&)>& add) {
    std::unique_ptr<PackWriter> full;
    {
        std::lock_guard lock(pack_mu_);
        if (!pack_) {
            auto created = PackWriter::create(repo_.env(), repo_.codec(),
                                              repo_.dir(format::kTmpDir), repo_.pack_version());
            if (!created) return std::unexpected(created.error());
            pack_ = std::move(*created);
        }
        if (auto st = add(*pack_); !st) return st;
        if (pack_->size() >= repo_.pack_size()) full = std::move(pack_);
    }
    if (full) return retire_pack(std::move(full));
    return {};
}

Status BackupSession::finish_pack(std::unique_ptr<PackWriter> pack) {
    auto info = pack->finish(repo_.dir(format::kDataDir));
    if (!info) return std::unexpected(info.error());
    std::lock_guard lock(finished_mu_);
    finished_packs_.push_back(std::move(*info));
    return {};
}

}  // namespace vmshadow::repo
