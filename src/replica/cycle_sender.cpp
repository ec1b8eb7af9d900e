// SPDX-License-Identifier: MIT
#include "replica/cycle_sender.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "common/hex.h"
#include "common/test_hook.h"
#include "replica/replica_protocol.h"

namespace vmshadow::replica {
namespace {

using json = nlohmann::json;

bool all_zero(std::span<const std::byte> bytes) {
    return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

BlockHash sha256(std::span<const std::byte> bytes) {
    BlockHash out{};
    unsigned int size = 0;
    EVP_Digest(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(out.data()), &size,
               EVP_sha256(), nullptr);
    return out;
}

std::string random_cycle_id() {
    std::array<std::uint8_t, 16> bytes{};
    RAND_bytes(bytes.data(), static_cast<int>(bytes.size()));
    return hex_encode(bytes);
}

}  // namespace

// ---- Pacer ---------------------------------------------------------------------------------

Pacer::Pacer(unsigned mib_per_s) : rate_(static_cast<double>(mib_per_s) * (1u << 20)) {
    tokens_ = rate_;
}

std::chrono::nanoseconds Pacer::reserve(std::size_t bytes, time_point now) {
    if (rate_ <= 0) return {};
    if (last_)
        tokens_ =
            std::min(rate_, tokens_ + std::chrono::duration<double>(now - *last_).count() * rate_);
    last_ = now;
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ >= 0) return {};
    // The debt is paid by waiting: the bucket is empty again once the wait is over.
    auto wait = std::chrono::duration<double>(-tokens_ / rate_);
    tokens_ = 0;
    last_ = now + std::chrono::duration_cast<std::chrono::nanoseconds>(wait);
    return std::chrono::duration_cast<std::chrono::nanoseconds>(wait);
}

// ---- the resync filter ---------------------------------------------------------------------

// One disk read in full while the replica holds it: its bytes are gathered block by block and
// a block is sent only when its SHA-256 differs from the replica's.
struct CycleSender::BlockFilter {
    std::string target;
    std::uint64_t size = 0;
    std::uint64_t block = 0;  // index of the block being gathered
    std::vector<std::byte> buffer;
    std::uint64_t filled = 0;
    bool has_data = false;        // some data extent wrote into the block being gathered
    std::vector<BlockHash> page;  // the replica's hashes of blocks [page_first, +page.size())
    std::uint64_t page_first = 0;

    std::uint64_t blocks() const { return (size + kResyncBlockBytes - 1) / kResyncBlockBytes; }
    std::uint64_t block_start() const { return block * kResyncBlockBytes; }
    std::uint64_t block_length() const {
        return std::min<std::uint64_t>(kResyncBlockBytes, size - block_start());
    }
    bool done() const { return block >= blocks(); }
};

// ---- CycleSender ---------------------------------------------------------------------------

CycleSender::CycleSender(ReplicaClient& client, SenderPlan plan, OnCommitted on_committed,
                         TaskContext* task, SenderTime time)
    : client_(client),
      plan_(std::move(plan)),
      on_committed_(std::move(on_committed)),
      task_(task),
      time_(std::move(time)),
      pacer_(plan_.bandwidth_mib) {}

CycleSender::~CycleSender() = default;

Status CycleSender::begin(const engine::ChangeSet& set) {
    set_ = set;
    if (set.disks.size() > 255)
        return fail(ErrorKind::unsupported, "vm '" + set.vm + "' has more than 255 disks");
    bool any_incremental = false, any_full = false;
    for (const auto& d : set.disks) (d.incremental ? any_incremental : any_full) = true;
    std::string base;
    if (plan_.replica_latest.empty()) {
        // The replica holds nothing: every byte of every disk goes, as new base images.
        if (any_incremental)
            return fail(ErrorKind::internal, "the replica of vm '" + set.vm +
                                                 "' has no point, but the read was "
                                                 "incremental");
        stats_.full = true;
    } else {
        // Disks read in full are compared with the replica's latest point. When every disk
        // is compared the cycle applies on that point; otherwise the incremental disks'
        // base is the link's checkpoint, which the replica checks it still holds (the
        // latest point is then that one or a later one, and comparing against it is right).
        filters_.resize(set.disks.size());
        for (std::size_t i = 0; i < set.disks.size(); ++i) {
            if (set.disks[i].incremental) continue;
            auto f = std::make_unique<BlockFilter>();
            f->target = set.disks[i].target;
            f->size = set.disks[i].size;
            filters_[i] = std::move(f);
            stats_.resync = true;
        }
        // No base token and not full: a resync, the differences against the latest point.
        base = any_incremental ? plan_.base_token : "";
        if (any_incremental && base.empty())
            return fail(ErrorKind::internal,
                        "vm '" + set.vm + "': an incremental read without a base checkpoint");
    }
    json disks = json::array();
    for (const auto& d : set.disks) disks.push_back({{"target", d.target}, {"size", d.size}});
    // A shut-off VM read without any checkpoint makes none: the point is named after its time.
    std::string token = set.checkpoint.empty() ? "offline-" + set.time : set.checkpoint;
    json header = {{"id", random_cycle_id()},
                   {"base_token", base},
                   {"token", token},
                   {"time", set.time},
                   {"consistency", set.consistency},
                   {"full", stats_.full},
                   {"disks", disks}};
    auto started = client_.begin_cycle(plan_.uuid, header);
    if (!started) return std::unexpected(started.error());
    if (started->resync_required) {
        resync_required_ = true;
        return fail(ErrorKind::conflict, "replica host " + client_.peer() + ": " +
                                             started->message + " (a resync follows)");
    }
    cycle_ = started->cycle;
    if (task_) task_->phase("sending changes to " + client_.peer());
    return {};
}

Status CycleSender::data(std::size_t disk, std::uint64_t offset, std::span<const std::byte> bytes) {
    if (disk >= set_.disks.size()) return fail(ErrorKind::internal, "extent of an unknown disk");
    if (!filters_.empty() && filters_[disk]) return feed_filter(disk, offset, bytes, 0);
    return add_data(disk, offset, bytes);
}

Status CycleSender::zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) {
    if (disk >= set_.disks.size()) return fail(ErrorKind::internal, "extent of an unknown disk");
    if (!filters_.empty() && filters_[disk]) return feed_filter(disk, offset, {}, length);
    return add_zero(disk, offset, length);
}

Status CycleSender::add_data(std::size_t disk, std::uint64_t offset,
                             std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
        auto piece = bytes.first(std::min<std::size_t>(bytes.size(), kMaxFrameBytes));
        auto d = static_cast<std::uint8_t>(disk);
        auto added = all_zero(piece)
                         ? encoder_.add_zero(d, offset, static_cast<std::uint32_t>(piece.size()))
                         : encoder_.add_data(d, offset, piece);
        if (!added) return added;
        offset += piece.size();
        bytes = bytes.subspan(piece.size());
        if (auto s = flush_chunk_if_full(); !s) return s;
    }
    return {};
}

Status CycleSender::add_zero(std::size_t disk, std::uint64_t offset, std::uint64_t length) {
    while (length > 0) {
        auto piece = static_cast<std::uint32_t>(std::min<std::uint64_t>(length, kMaxFrameBytes));
        if (auto s = encoder_.add_zero(static_cast<std::uint8_t>(disk), offset, piece); !s)
            return s;
        offset += piece;
        length -= piece;
        if (auto s = flush_chunk_if_full(); !s) return s;
    }
    return {};
}

Status CycleSender::flush_chunk_if_full() {
    if (encoder_.size() < kChunkTargetBytes) return {};
    return send_chunk();
}

void CycleSender::wait(std::chrono::nanoseconds delay) {
    if (delay <= std::chrono::nanoseconds::zero()) return;
    if (time_.sleep) return time_.sleep(delay);
    // In slices, so a cancel is seen within a quarter second.
    auto until = std::chrono::steady_clock::now() + delay;
    while (std::chrono::steady_clock::now() < until) {
        if (task_ && task_->cancel().requested()) return;
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
            until - std::chrono::steady_clock::now(), std::chrono::milliseconds(250)));
    }
}

Status CycleSender::send_chunk() {
    std::uint64_t frames = encoder_.frames();
    std::string body = encoder_.take();
    if (body.empty()) return {};
    wait(pacer_.reserve(body.size(), time_.now()));
    if (task_) {
        if (auto s = task_->check_cancel("replica cycle"); !s) return s;
    }
    digest_.add(body);
    std::size_t size = body.size();
    if (auto s = client_.put_chunk(plan_.uuid, cycle_, next_seq_, std::move(body)); !s) return s;
    ++next_seq_;
    stats_.chunks = next_seq_;
    stats_.frames += frames;
    stats_.bytes_sent += size;
    if (task_) task_->add_bytes(size);
    test_pause_point("replica-chunk-sent");  // tests: a kill -9 of the primary mid-cycle
    return {};
}

Status CycleSender::feed_filter(std::size_t disk, std::uint64_t offset,
                                std::span<const std::byte> bytes, std::uint64_t zero_length) {
    BlockFilter& f = *filters_[disk];
    std::uint64_t length = bytes.empty() ? zero_length : bytes.size();
    std::uint64_t end = offset + length;
    if (end > f.size || end < offset)
        return fail(ErrorKind::internal, "disk " + f.target + ": an extent past its end");
    if (offset < f.block_start() + f.filled)
        return fail(ErrorKind::internal, "disk " + f.target + ": extents out of order");
    // A full read delivers every byte; a gap would be bytes read as holes: zeros.
    while (f.block_start() + f.filled < end && !f.done()) {
        std::uint64_t at = f.block_start() + f.filled;
        std::uint64_t block_end = f.block_start() + f.block_length();
        std::uint64_t take = std::min(end, block_end) - at;
        if (f.buffer.size() != f.block_length()) f.buffer.assign(f.block_length(), std::byte{0});
        if (at >= offset && !bytes.empty()) {
            std::memcpy(f.buffer.data() + f.filled, bytes.data() + (at - offset), take);
            f.has_data = true;
        } else if (at < offset)
            take = std::min(take, offset - at);  // the gap before this extent: zeros
        else
            std::memset(f.buffer.data() + f.filled, 0, take);
        f.filled += take;
        if (f.filled == f.block_length()) {
            if (auto s = finish_block(disk); !s) return s;
        }
    }
    return {};
}

Status CycleSender::finish_block(std::size_t disk) {
    BlockFilter& f = *filters_[disk];
    if (f.block < f.page_first || f.block >= f.page_first + f.page.size()) {
        std::uint64_t count = std::min<std::uint64_t>(kMaxHashesPerRequest, f.blocks() - f.block);
        auto page = client_.hashes(plan_.uuid, f.target, kResyncBlockBytes, f.block, count);
        if (!page) return std::unexpected(page.error());
        f.page = std::move(*page);
        f.page_first = f.block;
    }
    std::span<const std::byte> data(f.buffer.data(), f.filled);
    ++stats_.blocks_compared;
    // Long zero extents (a disk's empty tail) cost one hash, not one per block.
    static const BlockHash zero_block = sha256(std::vector<std::byte>(kResyncBlockBytes));
    bool zero_only = !f.has_data && f.filled == kResyncBlockBytes;
    if ((zero_only ? zero_block : sha256(data)) != f.page[f.block - f.page_first]) {
        ++stats_.blocks_sent;
        if (auto s = add_data(disk, f.block_start(), data); !s) return s;
    }
    ++f.block;
    f.filled = 0;
    f.has_data = false;
    f.buffer.clear();
    return {};
}

Status CycleSender::finish_filters() {
    for (std::size_t i = 0; i < filters_.size(); ++i) {
        if (!filters_[i]) continue;
        BlockFilter& f = *filters_[i];
        // Bytes the read did not deliver up to the disk's end were holes: zeros.
        if (!f.done()) {
            if (auto s = feed_filter(i, f.size, {}, 0); !s) return s;
        }
    }
    return {};
}

Status CycleSender::commit() {
    if (auto s = finish_filters(); !s) return s;
    if (auto s = send_chunk(); !s) return s;
    json digest = {{"chunks", next_seq_}, {"frames", stats_.frames}, {"sha256", digest_.hex()}};
    auto answer = client_.commit_cycle(plan_.uuid, cycle_, digest);
    if (!answer) return std::unexpected(answer.error());
    committed_ = true;
    stats_.point = answer->value("point", json::object());
    if (on_committed_) return on_committed_(stats_.point, set_);
    return {};
}

void CycleSender::abort() {
    if (cycle_.empty() || committed_) return;
    (void)client_.abort_cycle(plan_.uuid, cycle_);
    cycle_.clear();
}

}  // namespace vmshadow::replica
