// SPDX-License-Identifier: MIT
#include "engine/checkpoint_forget.h"

#include <filesystem>
#include <set>

#include "engine/checkpoint_merge_plan.h"
#include "engine/checkpoint_tree.h"
#include "virt/block_commit.h"

namespace vmshadow::engine {
namespace {

// A chain deeper than this is not one vmshadow made (and a loop must end).
constexpr int kMaxChainDepth = 256;

// `paths` and every file in their backing chains.
std::set<std::string> with_backing_chains(const std::vector<std::string>& paths) {
    std::set<std::string> out;
    for (const auto& p : paths) {
        std::string image = p;
        for (int depth = 0; !image.empty() && depth < kMaxChainDepth; ++depth) {
            if (!out.insert(image).second) break;
            auto backing = virt::image_backing_file(image);
            if (!backing) break;  // not an image qemu-img reads (raw, missing): no chain
            image = *backing;
        }
    }
    return out;
}

}  // namespace

Result<std::vector<std::string>> forget_checkpoints(const std::string& vm_uuid,
                                                    const std::vector<std::string>& in_use) {
    auto tree = load_checkpoint_tree(vm_uuid);
    if (!tree) return std::unexpected(tree.error());
    std::vector<std::string> notes;
    if (tree->checkpoints.empty() && tree->active.empty()) return notes;
    const auto keep = with_backing_chains(in_use);
    std::vector<std::string> removed, left;
    for (const auto& image : images_in_record(*tree)) {
        if (keep.contains(image)) continue;
        std::error_code ec;
        if (std::filesystem::remove(image, ec) || !ec)
            removed.push_back(image);
        else
            left.push_back(image + " (" + ec.message() + ")");
    }
    if (auto st = remove_checkpoint_tree(vm_uuid); !st) return std::unexpected(st.error());
    notes.push_back("its " + std::to_string(tree->checkpoints.size()) +
                    " checkpoint(s) were forgotten: they described the disks the restore "
                    "replaced (" +
                    std::to_string(removed.size()) + " layer image(s) removed)");
    if (!left.empty()) {
        std::string list;
        for (const auto& l : left) list += (list.empty() ? "" : ", ") + l;
        notes.push_back("could not remove old checkpoint layers: " + list);
    }
    return notes;
}

}  // namespace vmshadow::engine
