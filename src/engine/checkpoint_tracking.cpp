// SPDX-License-Identifier: MIT
#include "engine/checkpoint_tracking.h"

namespace vmshadow::engine {

std::optional<std::string> checkpoint_tracking_broken(const CheckpointTree& tree,
                                                      std::int64_t since) {
    if (tree.tracking_reset_at > 0 && tree.tracking_reset_at >= since)
        return "change tracking was reset by a checkpoint operation (" +
               tree.tracking_reset_reason + ")";
    return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> paths_across_checkpoints(
    const CheckpointTree& tree, std::vector<std::pair<std::string, std::string>> previous,
    const std::vector<std::pair<std::string, std::string>>& current) {
    for (auto& [target, path] : previous) {
        for (const auto& [now_target, now_path] : current) {
            if (now_target != target || now_path == path) continue;
            for (const auto& active : tree.active)
                if (active.target == target && active.image == now_path) path = now_path;
        }
    }
    return previous;
}

}  // namespace vmshadow::engine
