// SPDX-License-Identifier: MIT
#include "repo/restore_plan.h"

#include <algorithm>
#include <string>

namespace vmshadow::repo {
namespace {

// A chunk placed in its pack: sorting these by (pack, frame offset, chunk) lines up each
// frame's chunks, and each pack's frames in the order they lie in the pack.
struct Placed {
    const Hash256* pack;
    BlobEntry entry;
    std::uint64_t chunk;
};

bool before(const Placed& a, const Placed& b) {
    if (a.pack != b.pack) return *a.pack < *b.pack;
    if (a.entry.offset != b.entry.offset) return a.entry.offset < b.entry.offset;
    return a.chunk < b.chunk;
}

// Whether `frame` can join `task` (same pack, after it, within the gap and span limits).
bool joins(const ReadTask& task, const Placed& frame, const PlanLimits& limits) {
    if (task.frames.empty() || task.pack != frame.pack) return false;
    if (frame.entry.offset < task.end || frame.entry.offset - task.end > limits.max_gap)
        return false;
    return frame.entry.offset + frame.entry.length - task.begin <= limits.max_span;
}

}  // namespace

Result<std::vector<ReadTask>> plan_reads(const Index& index,
                                         std::span<const std::pair<std::uint64_t, Hash256>> chunks,
                                         const PlanLimits& limits) {
    std::vector<Placed> placed;
    placed.reserve(chunks.size());
    for (const auto& [chunk, id] : chunks) {
        auto loc = index.find(id);
        if (!loc) return std::unexpected(not_in_index(id));
        placed.push_back({loc->pack, loc->entry, chunk});
    }
    std::sort(placed.begin(), placed.end(), before);

    std::vector<ReadTask> tasks;
    for (std::size_t i = 0; i < placed.size();) {
        // The chunks of one frame: the same pack and stored offset.
        std::size_t j = i;
        FrameRead frame{placed[i].entry, {}};
        for (; j < placed.size() && placed[j].pack == placed[i].pack &&
               placed[j].entry.offset == placed[i].entry.offset;
             ++j) {
            const BlobEntry& e = placed[j].entry;
            frame.uses.push_back(
                {placed[j].chunk, e.id, e.framed ? e.frame_offset : 0u, e.raw_length});
        }
        if (tasks.empty() || !joins(tasks.back(), placed[i], limits)) {
            ReadTask t;
            t.pack = placed[i].pack;
            t.begin = placed[i].entry.offset;
            t.first_chunk = placed[i].chunk;
            tasks.push_back(std::move(t));
        }
        ReadTask& task = tasks.back();
        task.end = placed[i].entry.offset + placed[i].entry.length;
        for (const auto& u : frame.uses) {
            task.first_chunk = std::min(task.first_chunk, u.chunk);
            task.chunk_bytes += u.length;
        }
        task.frames.push_back(std::move(frame));
        i = j;
    }
    std::sort(tasks.begin(), tasks.end(),
              [](const ReadTask& a, const ReadTask& b) { return a.first_chunk < b.first_chunk; });
    return tasks;
}

}  // namespace vmshadow::repo
