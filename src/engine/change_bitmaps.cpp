// SPDX-License-Identifier: MIT
#include "engine/change_bitmaps.h"

#include <algorithm>

namespace vmshadow::engine {

std::optional<std::vector<std::string>> bitmaps_since(const std::vector<virt::CheckpointInfo>& all,
                                                      const std::string& since,
                                                      const std::string& target) {
    auto first = std::find_if(all.begin(), all.end(),
                              [&](const virt::CheckpointInfo& c) { return c.name == since; });
    if (first == all.end()) return std::nullopt;
    std::vector<std::string> bitmaps;
    auto bitmap_of = [&](const virt::CheckpointInfo& c) -> const std::string* {
        for (const auto& d : c.disks)
            if (d.target == target && !d.bitmap.empty()) return &d.bitmap;
        return nullptr;
    };
    const std::string* own = bitmap_of(*first);
    if (!own) return std::nullopt;
    bitmaps.push_back(*own);
    // Creation times have whole seconds: one made in the same second may sort either side.
    for (const auto& c : all) {
        if (c.name == since || c.creation_time < first->creation_time) continue;
        if (const std::string* b = bitmap_of(c)) bitmaps.push_back(*b);
    }
    return bitmaps;
}

std::string merged_bitmap_name(const std::string& chain_id) {
    return "vmshadow-changes-" + chain_id.substr(0, 8);
}

}  // namespace vmshadow::engine
