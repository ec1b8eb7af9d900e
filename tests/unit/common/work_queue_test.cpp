// SPDX-License-Identifier: MIT
// common/work_queue.h: bounded memory, every item run once, parallel workers, abort.
#include "common/work_queue.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <set>

#include "unit/common/address_limit.h"

namespace vmshadow {
namespace {

using namespace std::chrono_literals;

struct Item {
    int value = 0;
    std::uint64_t weight = 1;
    std::shared_ptr<int> owned;  // counts as held until the item is destroyed
};

std::uint64_t weigh(const Item& i) {
    return i.weight;
}

TEST(WorkQueue, RunsEveryItemExactlyOnce) {
    std::mutex mu;
    std::multiset<int> seen;
    {
        WorkQueue<Item> queue(8, WorkQueue<Item>::Release::taken, weigh);
        ASSERT_TRUE(queue.start(4, [&](Item& i, unsigned) {
            std::lock_guard lock(mu);
            seen.insert(i.value);
        }));
        for (int v = 0; v < 1000; ++v) ASSERT_TRUE(queue.push(Item{.value = v}));
        queue.finish();
    }
    ASSERT_EQ(seen.size(), 1000u);
    for (int v = 0; v < 1000; ++v) EXPECT_EQ(seen.count(v), 1u) << v;
}

TEST(WorkQueue, HoldsNoMoreThanItsCapacityUntilDone) {
    std::atomic<int> alive{0}, most{0};
    WorkQueue<Item> queue(4, WorkQueue<Item>::Release::done, weigh);
    ASSERT_TRUE(queue.start(2, [&](Item&, unsigned) { std::this_thread::sleep_for(1ms); }));
    for (int v = 0; v < 200; ++v) {
        // Each item keeps a token alive; with Release::done its weight comes back only after
        // the worker dropped it, so at most capacity / weight tokens exist at once.
        auto token = std::shared_ptr<int>(new int(v), [&](int* p) {
            --alive;
            delete p;
        });
        int now = ++alive;
        most = std::max(most.load(), now);
        ASSERT_TRUE(queue.push(Item{.value = v, .weight = 2, .owned = std::move(token)}));
    }
    queue.finish();
    EXPECT_EQ(alive, 0);
    // The producer makes the next token before push() waits for room: capacity 4 / weight 2
    // = 2 held, plus the one being pushed.
    EXPECT_LE(most, 3);
}

TEST(WorkQueue, AdmitsAnItemHeavierThanTheCapacityIntoAnEmptyQueue) {
    std::atomic<int> ran{0};
    WorkQueue<Item> queue(1, WorkQueue<Item>::Release::done, weigh);
    ASSERT_TRUE(queue.start(1, [&](Item&, unsigned) { ++ran; }));
    ASSERT_TRUE(queue.push(Item{.weight = 100}));
    ASSERT_TRUE(queue.push(Item{.weight = 100}));
    queue.finish();
    EXPECT_EQ(ran, 2);
}

TEST(WorkQueue, WorkersRunInParallel) {
    std::atomic<int> running{0}, most{0};
    WorkQueue<Item> queue(100, WorkQueue<Item>::Release::taken, weigh);
    ASSERT_TRUE(queue.start(4, [&](Item&, unsigned) {
        int now = ++running;
        most = std::max(most.load(), now);
        std::this_thread::sleep_for(20ms);
        --running;
    }));
    for (int v = 0; v < 8; ++v) ASSERT_TRUE(queue.push(Item{.value = v}));
    queue.finish();
    EXPECT_GE(most, 2);
    EXPECT_LE(most, 4);
}

TEST(WorkQueue, WorkerIndexesAreDistinctAndBelowTheCount) {
    std::mutex mu;
    std::set<unsigned> workers;
    WorkQueue<Item> queue(100, WorkQueue<Item>::Release::taken, weigh);
    ASSERT_TRUE(queue.start(3, [&](Item&, unsigned worker) {
        std::lock_guard lock(mu);
        workers.insert(worker);
        std::this_thread::sleep_for(5ms);
    }));
    for (int v = 0; v < 30; ++v) ASSERT_TRUE(queue.push(Item{}));
    queue.finish();
    for (unsigned w : workers) EXPECT_LT(w, 3u);
}

TEST(WorkQueue, AbortWakesAWaitingProducerAndDropsWhatIsQueued) {
    std::atomic<int> ran{0};
    WorkQueue<Item> queue(2, WorkQueue<Item>::Release::done, weigh);
    ASSERT_TRUE(queue.start(1, [&](Item& i, unsigned) {
        ++ran;
        if (i.value == 0) {
            queue.abort();  // as a worker does on the first error
            std::this_thread::sleep_for(10ms);
        }
    }));
    int pushed = 0;
    for (int v = 0; v < 100; ++v) {
        if (!queue.push(Item{.value = v})) break;
        ++pushed;
    }
    queue.finish();
    EXPECT_LT(pushed, 100);
    EXPECT_LE(ran, pushed);
    EXPECT_FALSE(queue.push(Item{}));
}

TEST(WorkQueue, WithoutWorkersHasWorkersIsFalse) {
    WorkQueue<Item> queue(1, WorkQueue<Item>::Release::taken, weigh);
    EXPECT_FALSE(queue.has_workers());
    ASSERT_TRUE(queue.start(0, [](Item&, unsigned) {}));
    EXPECT_FALSE(queue.has_workers());
}

// In a child whose address space has room for only a few thread stacks, starting many
// workers fails with an I/O error naming the thread limit, not an abort; the workers that
// did start still run what is pushed and are joined.
TEST(WorkQueue, ThreadCreationFailureIsAnIoError) {
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        if (!vmshadow::test::limit_address_space(40ull << 20)) _exit(90);  // a few 8 MiB stacks
        std::atomic<int> ran{0};
        WorkQueue<Item> queue(4, WorkQueue<Item>::Release::taken, weigh);
        Status st = queue.start(256, [&](Item&, unsigned) { ++ran; });
        if (st) _exit(91);
        if (st.error().kind() != ErrorKind::io) _exit(92);
        if (st.error().message().find("thread") == std::string::npos) _exit(93);
        if (queue.has_workers() && (!queue.push(Item{}) || (queue.finish(), ran != 1))) _exit(94);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace vmshadow
