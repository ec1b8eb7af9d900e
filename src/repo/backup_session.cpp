// SPDX-License-Identifier: MIT
// BackupSession (backup_session.h): begin, threads, buffers, errors and the commit. Its
// DiskWriter, PointBuilder and chunk pipeline are in disk_writer.cpp, point_builder.cpp and
// chunk_pipeline.cpp.
#include "repo/backup_session.h"

#include <algorithm>
#include <cstring>
#include <ctime>

#include "repo/format.h"

namespace vmshadow::repo {

unsigned default_workers() {
    return std::max(1u, std::thread::hardware_concurrency());
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
    // Only a chance: never wait for it (--retry-lock would make every backup that meets
    // another wait out the whole duration); the shared lock below is what waits.
    auto exclusive = RepoLock::acquire(repo.env(), repo.root(), LockMode::exclusive,
                                       options.operation, {}, repo.lock_log());
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
    // Finishers are at least one and at most the workers: more could not be fed.
    unsigned finishers = std::clamp(repo_.env().write_concurrency(), 1u, options_.workers);
    return repo::start_threads(finishers_, finishers, [this] { finisher(); });
}

BackupSession::BackupSession(Repository& repo, const SessionOptions& options,
                             std::unique_ptr<RepoLock> lock)
    : repo_(repo),
      options_(options),
      lock_(std::move(lock)),
      frame_chunks_(repo.frame_chunks()),
      started_(std::chrono::steady_clock::now()),
      queue_(options.max_inflight_bytes, WorkQueue<Job>::Release::done,
             [](const Job& job) { return std::uint64_t{job.length}; }) {
    // A lost lock fails the session like a worker's error: the next write stops the backup.
    lock_->on_lost([this](const Error& e) { set_error(e); });
}

BackupSession::~BackupSession() {
    lock_->on_lost({});
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
    if (finishers_.empty()) return;
    {
        std::lock_guard lock(finisher_mu_);
        finisher_stopping_ = true;
    }
    finisher_cv_.notify_all();
    for (auto& t : finishers_)
        if (t.joinable()) t.join();
    finishers_.clear();
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
        }
        // After an error the pack is dropped (its temp file removed): nothing will commit.
        if (!failed())
            if (auto st = finish_pack(std::move(pack)); !st) set_error(st.error());
        pack.reset();
        finisher_space_cv_.notify_all();
    }
}

Status BackupSession::retire_pack(std::unique_ptr<PackWriter> pack) {
    if (finishers_.empty()) return finish_pack(std::move(pack));
    // One pack waiting per finisher besides the ones being finished: enough to keep them all
    // busy, few enough that a slow store holds back the workers instead of filling memory.
    std::unique_lock lock(finisher_mu_);
    finisher_space_cv_.wait(lock, [&] { return full_packs_.size() < finishers_.size() + 1; });
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
    // Nothing is published under a lock that is gone: gc may have run meanwhile.
    if (auto st = lock_->verify(); !st) return std::unexpected(st.error());
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
