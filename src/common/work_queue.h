// SPDX-License-Identifier: MIT
#pragma once
// A bounded queue feeding a fixed set of worker threads: the one producer/consumer pipeline
// of the code (a backup session's chunk pipeline, a restore's chunk runs). Memory stays
// bounded because a producer waits while the items in the queue weigh more than the
// capacity; parallelism is the number of workers.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/error.h"

namespace vmshadow {

// Starts `count` threads running `body` into `threads`. A thread that cannot be created
// (std::system_error: the process's or user's thread limit, memory) is ErrorKind::io; the
// threads already started are left in `threads` for the caller to stop and join.
template <typename Thread, typename Body>
Status start_threads(std::vector<Thread>& threads, unsigned count, const Body& body) {
    try {
        for (unsigned i = 0; i < count; ++i) threads.emplace_back(body);
    } catch (const std::system_error& e) {
        return fail(ErrorKind::io, "cannot start worker thread " +
                                       std::to_string(threads.size() + 1) + " of " +
                                       std::to_string(count) + ": " + e.what() +
                                       " (the process or user thread limit; use fewer --workers)");
    }
    return {};
}

template <typename Item>
class WorkQueue {
  public:
    // When an item's weight is given back: `taken` bounds what waits in the queue, `done`
    // what waits plus what the workers hold (an item is destroyed before its weight returns,
    // so buffers it owns count until they are freed).
    enum class Release { taken, done };
    using Weigh = std::function<std::uint64_t(const Item&)>;
    // Runs on worker `worker` (0..workers-1, for per-worker scratch buffers).
    using Work = std::function<void(Item& item, unsigned worker)>;

    WorkQueue(std::uint64_t capacity, Release release, Weigh weigh)
        : capacity_(capacity), release_(release), weigh_(std::move(weigh)) {}
    WorkQueue(const WorkQueue&) = delete;
    WorkQueue& operator=(const WorkQueue&) = delete;
    ~WorkQueue() { finish(); }

    // Starts the workers. A thread that cannot be created is an error; those started run
    // until finish().
    Status start(unsigned workers, Work work) {
        work_ = std::move(work);
        return start_threads(threads_, workers, [this] { run(next_worker_++); });
    }

    bool has_workers() const { return !threads_.empty(); }

    // Queues `item`, first waiting until it fits (an item heavier than the capacity waits
    // for an empty queue). False, without queueing, once abort() was called.
    bool push(Item item) {
        std::uint64_t weight = weigh_(item);
        std::unique_lock lock(mu_);
        space_cv_.wait(lock, [&] { return aborted_ || held_ == 0 || held_ + weight <= capacity_; });
        if (aborted_) return false;
        held_ += weight;
        queue_.push_back(std::move(item));
        lock.unlock();
        work_cv_.notify_one();
        return true;
    }

    // Producers stop waiting and push() refuses; the items still queued are dropped unrun.
    void abort() {
        {
            std::lock_guard lock(mu_);
            aborted_ = true;
        }
        space_cv_.notify_all();
        work_cv_.notify_all();
    }

    // Runs what is queued (unless aborted) and joins the workers.
    void finish() {
        {
            std::lock_guard lock(mu_);
            finishing_ = true;
        }
        work_cv_.notify_all();
        for (auto& t : threads_) t.join();
        threads_.clear();
    }

  private:
    void run(unsigned worker) {
        for (;;) {
            std::uint64_t weight = 0;
            bool skip = false;
            {
                std::unique_lock lock(mu_);
                work_cv_.wait(lock, [&] { return finishing_ || aborted_ || !queue_.empty(); });
                if (queue_.empty()) return;
                Item item = std::move(queue_.front());
                queue_.pop_front();
                weight = weigh_(item);
                skip = aborted_;
                if (release_ == Release::taken) give_back(weight);
                lock.unlock();
                if (release_ == Release::taken) space_cv_.notify_all();
                if (!skip) work_(item, worker);
            }  // the item, and what it owns, is gone before its weight returns
            if (release_ == Release::done) {
                {
                    std::lock_guard lock(mu_);
                    give_back(weight);
                }
                space_cv_.notify_all();
            }
        }
    }
    void give_back(std::uint64_t weight) { held_ -= weight; }  // needs mu_

    const std::uint64_t capacity_;
    const Release release_;
    const Weigh weigh_;
    Work work_;
    std::mutex mu_;
    std::condition_variable work_cv_, space_cv_;
    std::deque<Item> queue_;
    std::uint64_t held_ = 0;
    bool aborted_ = false, finishing_ = false;
    std::atomic<unsigned> next_worker_{0};
    std::vector<std::thread> threads_;
};

}  // namespace vmshadow
