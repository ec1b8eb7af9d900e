// SPDX-License-Identifier: MIT
#pragma once
// CycleSender: the engine::ChangeSink of one replica cycle on the primary — the changed
// extents the engine reads become frames (cycle_format.h), sent in order in chunks of about
// kChunkTargetBytes under the link's bandwidth cap, then committed with the cycle's digest.
//
// This module is:
//   - begin: POST /cycles with the CycleBegin (base token, the new checkpoint as token, time,
//     consistency, disks); a 409 resync_required answer ends the cycle with `resync_required()`
//     set (the primary then runs a resync);
//   - a full cycle (the replica has no point yet): every byte of every disk is sent;
//   - a resync disk (read in full while the replica already has points): the replica's
//     SHA-256 of each kResyncBlockBytes block is fetched (POST /hashes, pages of
//     kMaxHashesPerRequest) and only blocks that differ are sent (zero blocks compared too);
//     when every disk is a resync disk the cycle has no base token and is not full: the
//     replica applies it over its latest point, whose blocks were compared;
//   - the bandwidth cap: a token bucket (MiB/s, one second of burst) in front of each chunk;
//   - commit: the last chunk, then POST /commit {"chunks", "frames", "sha256"}; only once the
//     replica answered is `on_committed` told (the primary records the new checkpoint there),
//     and only then does commit() return, so the engine retires older checkpoints after the
//     replica holds the point;
//   - abort(): the replica is told to drop an unfinished cycle (best effort: it also drops it
//     by itself when the next cycle begins).
// It is not: the read (engine/vm_changes.h), the HTTP calls (replica_client.h) or the link.
//
// Thread-safety: one thread (the engine calls a sink from the reading thread only).
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/task.h"
#include "engine/vm_changes.h"
#include "replica/cycle_format.h"
#include "replica/replica_client.h"

namespace vmshadow::replica {

// A token bucket: `mib_per_s` MiB/s (0: unlimited), one second's worth of burst.
class Pacer {
  public:
    using time_point = std::chrono::steady_clock::time_point;
    explicit Pacer(unsigned mib_per_s = 0);
    // How long to wait, from `now`, before `bytes` may be sent; the bytes are taken.
    std::chrono::nanoseconds reserve(std::size_t bytes, time_point now);

  private:
    double rate_ = 0;  // bytes per second
    double tokens_ = 0;
    std::optional<time_point> last_;
};

struct SenderPlan {
    std::string uuid;
    std::string base_token;      // the link's acknowledged checkpoint ("": none)
    std::string replica_latest;  // the replica's latest point's token ("": it has none)
    unsigned bandwidth_mib = 0;
};

struct SenderStats {
    std::uint64_t bytes_sent = 0;  // chunk bodies on the wire
    std::uint64_t chunks = 0, frames = 0;
    std::uint64_t blocks_compared = 0, blocks_sent = 0;  // resync disks
    bool resync = false;                                 // some disk was compared block by block
    bool full = false;
    nlohmann::json point;  // the replica's RecoveryPoint once committed
};

// Waits (the pacer's delays); the default sleeps on the steady clock.
struct SenderTime {
    std::function<Pacer::time_point()> now = [] { return std::chrono::steady_clock::now(); };
    std::function<void(std::chrono::nanoseconds)> sleep;
};

class CycleSender final : public engine::ChangeSink {
  public:
    using OnCommitted =
        std::function<Status(const nlohmann::json& point, const engine::ChangeSet& set)>;
    CycleSender(ReplicaClient& client, SenderPlan plan, OnCommitted on_committed, TaskContext* task,
                SenderTime time = {});
    ~CycleSender() override;

    Status begin(const engine::ChangeSet& set) override;
    Status data(std::size_t disk, std::uint64_t offset, std::span<const std::byte> bytes) override;
    Status zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) override;
    Status commit() override;
    // Drops an unfinished cycle on the replica; nothing when none began or it committed.
    void abort();

    bool resync_required() const { return resync_required_; }
    bool committed() const { return committed_; }
    const SenderStats& stats() const { return stats_; }

  private:
    struct BlockFilter;
    Status add_data(std::size_t disk, std::uint64_t offset, std::span<const std::byte> bytes);
    Status add_zero(std::size_t disk, std::uint64_t offset, std::uint64_t length);
    Status flush_chunk_if_full();
    Status send_chunk();
    Status feed_filter(std::size_t disk, std::uint64_t offset, std::span<const std::byte> bytes,
                       std::uint64_t zero_length);
    Status finish_block(std::size_t disk);
    Status finish_filters();
    void wait(std::chrono::nanoseconds delay);

    ReplicaClient& client_;
    SenderPlan plan_;
    OnCommitted on_committed_;
    TaskContext* task_;
    SenderTime time_;
    Pacer pacer_;
    ChunkEncoder encoder_;
    CycleDigest digest_;
    engine::ChangeSet set_;
    std::string cycle_;
    std::uint64_t next_seq_ = 0;
    std::vector<std::unique_ptr<BlockFilter>> filters_;  // per disk; null: sent as read
    bool resync_required_ = false;
    bool committed_ = false;
    SenderStats stats_;
};

}  // namespace vmshadow::replica
