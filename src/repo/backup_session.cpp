// SPDX-License-Identifier: MIT
#include "repo/backup_session.h"

#include <algorithm>
#include <cstring>
#include <ctime>

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

unsigned default_workers() {
    return std::max(1u, std::thread::hardware_concurrency());
}

// ---- DiskWriter ------------------------------------------------------------------------

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

// ---- PointBuilder ----------------------------------------------------------------------

PointBuilder::PointBuilder(BackupSession& session, std::string vm, std::string consistency)
    : session_(session) {
    point_.vm = std::move(vm);
    point_.consistency = std::move(consistency);
    auto now = std::chrono::system_clock::now().time_since_epoch();
    point_.time_us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
    point_.time = point_.time_us / 1000000;
}

Result<DiskWriter*> PointBuilder::add_disk(const std::string& name, std::uint64_t size,
                                           const RestorePoint* base, nlohmann::json info) {
    for (const auto& d : disks_)
        if (d->name_ == name)
            return fail(ErrorKind::invalid_argument, "disk " + name + " added twice");
    std::optional<ChunkMap> base_map;
    std::uint64_t base_size = 0;
    const Repository& repo = session_.repository();
    if (base) {
        if (const DiskRecord* d = base->disk(name)) {
            base_map.emplace(repo, d->map, d->size, repo.config().chunk_size,
                             repo.config().map_fanout);
            if (auto st = base_map->validate(); !st)
                return std::unexpected(
                    st.error().with_context("base point " + base->id.short_hex()));
            base_size = d->size;
        }
        point_.parent = base->id;
    }
    disks_.push_back(
        std::make_unique<DiskWriter>(session_, name, size, std::move(base_map), base_size));
    DiskRecord record;
    record.name = name;
    record.size = size;
    record.info = info.is_object() ? info : nlohmann::json::object();
    point_.disks.push_back(std::move(record));
    return disks_.back().get();
}

Result<DiskWriter*> PointBuilder::add_file(const std::string& name, const std::string& role,
                                           std::uint64_t size) {
    for (const auto& f : files_)
        if (f.first.name == name)
            return fail(ErrorKind::invalid_argument, "file " + name + " added twice");
    FileRecord record;
    record.name = name;
    record.role = role;
    record.size = size;
    files_.emplace_back(record,
                        std::make_unique<DiskWriter>(session_, name, size, std::nullopt, 0));
    return files_.back().second.get();
}

Status PointBuilder::add_file(const std::string& name, const std::string& role, ByteView content) {
    auto writer = add_file(name, role, content.size());
    if (!writer) return std::unexpected(writer.error());
    if (auto st = (*writer)->write(0, Bytes(content.begin(), content.end())); !st) return st;
    return (*writer)->finish();
}

// ---- BackupSession ---------------------------------------------------------------------

Result<std::unique_ptr<BackupSession>> BackupSession::begin(Repository& repo,
                                                            const SessionOptions& options) {
    if (options.workers > kMaxWorkers)
        return fail(ErrorKind::invalid_argument,
                    "a backup session runs 0.." + std::to_string(kMaxWorkers) + " workers, not " +
                        std::to_string(options.workers));
    // When no one else is using the repository, take the chance to remove what crashed runs
    // left behind (that needs the exclusive lock), then let others in.
    std::unique_ptr<RepoLock> lock;
    auto exclusive = repo.lock(LockMode::exclusive, options.operation);
    if (exclusive) {
        lock = std::move(*exclusive);
        if (auto st = repo.load_index(); !st) return std::unexpected(st.error());
        if (auto removed = repo.cleanup_leftovers(); !removed)
            return std::unexpected(removed.error());
        if (auto st = lock->downgrade(); !st) return std::unexpected(st.error());
    } else if (exclusive.error().kind() == ErrorKind::locked) {
        // Another backup may hold its brief cleanup lock right now: retry for a few seconds
        // before reporting the repository as locked (gc and prune hold it much longer).
        auto shared = repo.lock(LockMode::shared, options.operation);
        for (int i = 0; i < 50 && !shared && shared.error().kind() == ErrorKind::locked; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            shared = repo.lock(LockMode::shared, options.operation);
        }
        if (!shared) return std::unexpected(shared.error());
        lock = std::move(*shared);
        if (auto st = repo.load_index(); !st) return std::unexpected(st.error());
    } else {
        return std::unexpected(exclusive.error());
    }
    std::unique_ptr<BackupSession> session(new BackupSession(repo, options, std::move(lock)));
    // A thread that cannot be created is an error; the destructor joins those that started.
    if (auto st = session->start_threads(); !st) return std::unexpected(st.error());
    return session;
}

Status BackupSession::start_threads() {
    if (auto st = queue_.start(options_.workers, [this](Job& job, unsigned) { process(job); }); !st)
        return st;
    if (options_.workers == 0) return {};
    std::vector<std::thread> one;
    if (auto st = repo::start_threads(one, 1, [this] { finisher(); }); !st) return st;
    finisher_ = std::move(one.front());
    return {};
}

BackupSession::BackupSession(Repository& repo, const SessionOptions& options,
                             std::unique_ptr<RepoLock> lock)
    : repo_(repo),
      options_(options),
      lock_(std::move(lock)),
      frame_chunks_(repo.frame_chunks()),
      started_(std::chrono::steady_clock::now()),
      queue_(options.max_inflight_bytes, WorkQueue<Job>::Release::done,
             [](const Job& job) { return std::uint64_t{job.length}; }) {}

BackupSession::~BackupSession() {
    stop_workers();
    stop_finisher();
    if (!committed_) {
        pack_.reset();  // removes its temp file
        // Packs of an uncommitted session are referenced by nothing: give the space back
        // (best effort; after a crash the next run's cleanup does it).
        for (const auto& p : finished_packs_)
            (void)repo_.env().remove(pack_path(repo_.dir(format::kDataDir), p.id));
    }
}

void BackupSession::stop_workers() {
    queue_.finish();
}

void BackupSession::stop_finisher() {
    if (!finisher_.joinable()) return;
    {
        std::lock_guard lock(finisher_mu_);
        finisher_stopping_ = true;
    }
    finisher_cv_.notify_all();
    finisher_.join();
}

void BackupSession::finisher() {
    for (;;) {
        std::unique_ptr<PackWriter> pack;
        {
            std::unique_lock lock(finisher_mu_);
            finisher_cv_.wait(lock, [&] { return finisher_stopping_ || !full_packs_.empty(); });
            if (full_packs_.empty()) return;
            pack = std::move(full_packs_.front());
            full_packs_.pop_front();
            finisher_busy_ = true;
        }
        // After an error the pack is dropped (its temp file removed): nothing will commit.
        if (!failed())
            if (auto st = finish_pack(std::move(pack)); !st) set_error(st.error());
        pack.reset();
        {
            std::lock_guard lock(finisher_mu_);
            finisher_busy_ = false;
        }
        finisher_space_cv_.notify_all();
    }
}

Status BackupSession::retire_pack(std::unique_ptr<PackWriter> pack) {
    if (!finisher_.joinable()) return finish_pack(std::move(pack));
    std::unique_lock lock(finisher_mu_);
    finisher_space_cv_.wait(lock, [&] { return full_packs_.size() < 2; });
    full_packs_.push_back(std::move(pack));
    lock.unlock();
    finisher_cv_.notify_one();
    return {};
}

Bytes BackupSession::take_buffer(std::size_t size) {
    Bytes b;
    {
        // The most recently returned buffer that fits without wasting more than half of
        // it: a buffer in flight then never holds more than twice what it carries.
        std::lock_guard lock(buffers_mu_);
        for (auto it = free_buffers_.rbegin(); it != free_buffers_.rend(); ++it)
            if (it->capacity() >= size && it->capacity() / 2 <= size) {
                pooled_bytes_ -= it->capacity();
                b = std::move(*it);
                free_buffers_.erase(std::next(it).base());
                break;
            }
    }
    // resize() zero-fills only what grows; a recycled buffer of the same size costs nothing.
    b.resize(size);
    return b;
}

void BackupSession::recycle_buffer(Bytes* buffer) {
    std::unique_ptr<Bytes> owned(buffer);
    if (owned->capacity() < (64u << 10)) return;
    // A small pool is enough: a reader takes a buffer back as soon as a worker returns one.
    // The oldest buffers leave first, so sizes nobody asks for anymore age out.
    std::lock_guard lock(buffers_mu_);
    pooled_bytes_ += owned->capacity();
    free_buffers_.push_back(std::move(*owned));
    while (pooled_bytes_ > options_.max_inflight_bytes / 4 && !free_buffers_.empty()) {
        pooled_bytes_ -= free_buffers_.front().capacity();
        free_buffers_.erase(free_buffers_.begin());
    }
}

PointBuilder& BackupSession::add_point(const std::string& vm, const std::string& consistency) {
    points_.push_back(std::make_unique<PointBuilder>(*this, vm, consistency));
    return *points_.back();
}

std::optional<Error> BackupSession::error() const {
    if (!failed_) return std::nullopt;
    std::lock_guard lock(error_mu_);
    return error_;
}

void BackupSession::set_error(const Error& e) {
    std::lock_guard lock(error_mu_);
    if (!error_) error_ = e;
    failed_ = true;
}

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

Result<std::vector<RestorePoint>> BackupSession::commit() {
    if (committed_) return fail(ErrorKind::internal, "session committed twice");
    for (auto& p : points_) {
        for (auto& d : p->disks_)
            if (auto st = d->finish(); !st) return std::unexpected(st.error());
        for (auto& f : p->files_)
            if (auto st = f.second->finish(); !st) return std::unexpected(st.error());
    }
    stop_workers();
    stop_finisher();
    if (auto e = error()) return fail(*e);
    if (pack_ && !pack_->empty())
        if (auto st = finish_pack(std::move(pack_)); !st) return std::unexpected(st.error());
    if (!finished_packs_.empty())
        if (auto id = repo_.write_index_file(finished_packs_); !id)
            return std::unexpected(id.error());
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    std::vector<RestorePoint> points;
    for (auto& p : points_) {
        RestorePoint r = p->point_;
        r.bytes_added = 0;
        for (std::size_t i = 0; i < p->disks_.size(); ++i) {
            r.disks[i].map = p->disks_[i]->map();
            r.disks[i].bytes_added = p->disks_[i]->stats().bytes_added;
            r.bytes_added += r.disks[i].bytes_added;
        }
        for (auto& [record, writer] : p->files_) {
            record.map = writer->map();
            r.files.push_back(record);
            r.bytes_added += writer->stats().bytes_added;
        }
        if (!r.timings.contains("total_s")) r.timings["total_s"] = seconds;
        points.push_back(std::move(r));
    }
    auto commit = repo_.write_commit(points);
    if (!commit) return std::unexpected(commit.error());
    committed_ = true;
    repo_.add_indexed_packs(finished_packs_);
    (void)lock_->release();
    return points;
}

}  // namespace vmshadow::repo
