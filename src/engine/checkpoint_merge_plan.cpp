// SPDX-License-Identifier: MIT
#include "engine/checkpoint_merge_plan.h"

#include <algorithm>
#include <set>

namespace vmshadow::engine {
namespace {

std::string image_of(const std::vector<CheckpointDisk>& disks, const std::string& target) {
    for (const auto& d : disks)
        if (d.target == target) return d.image;
    return {};
}

void set_image(std::vector<CheckpointDisk>& disks, const std::string& target,
               const std::string& image) {
    for (auto& d : disks)
        if (d.target == target) d.image = image;
}

struct Dependant {
    std::string owner;  // checkpoint id or kNowOwner
    std::string image;
    bool open = false;  // in the running VM's chain
};

// The images backed by checkpoint `id`'s layer of `target`.
std::vector<Dependant> dependants(const CheckpointTree& tree, const std::string& id,
                                  const std::string& target, const std::set<std::string>& on_path,
                                  bool running) {
    std::vector<Dependant> out;
    for (const auto* child : checkpoint_children(tree, id))
        out.push_back(
            {child->id, image_of(child->disks, target), running && on_path.contains(child->id)});
    if (tree.current == id) out.push_back({kNowOwner, image_of(tree.active, target), running});
    return out;
}

DiskMergePlan plan_disk(const CheckpointTree& tree, const Checkpoint& checkpoint,
                        const std::string& target, const std::set<std::string>& on_path,
                        bool running, const std::set<std::string>& moved) {
    DiskMergePlan plan;
    plan.target = target;
    plan.layer = image_of(checkpoint.disks, target);
    if (!checkpoint.parent.empty())
        if (auto parent = find_checkpoint(tree, checkpoint.parent))
            plan.layer_backing = image_of((*parent)->disks, target);
    auto deps = dependants(tree, checkpoint.id, target, on_path, running);
    const auto merged_before =
        std::erase_if(deps, [&](const Dependant& d) { return d.image == plan.layer; });
    auto can_keep = [&](const Dependant& d) {
        return merged_before == 0 && !moved.contains(d.image);
    };
    // keep: the open one, else the first a shut-off VM's domain XML does not name.
    auto keep = std::find_if(deps.begin(), deps.end(),
                             [&](const Dependant& d) { return d.open && can_keep(d); });
    if (keep == deps.end())
        keep = std::find_if(deps.begin(), deps.end(), [&](const Dependant& d) {
            return !d.open && d.owner != kNowOwner && can_keep(d);
        });
    for (auto it = deps.begin(); it != deps.end(); ++it)
        if (it != keep) plan.pull.push_back(it->image);
    if (keep == deps.end()) return plan;
    plan.has_keep = true;
    plan.keep_owner = keep->owner;
    plan.keep_image = keep->image;
    if (keep->open)
        plan.keep_merge =
            keep->owner == kNowOwner ? LayerMerge::commit_active : LayerMerge::commit_intermediate;
    if (keep->owner != kNowOwner)
        for (const auto& d : dependants(tree, keep->owner, target, on_path, running))
            if (!d.open && d.image != plan.layer) plan.repoint.push_back(d.image);
    return plan;
}

}  // namespace

CheckpointMergePlan plan_checkpoint_merge(const CheckpointTree& tree, const Checkpoint& checkpoint,
                                          bool running, const std::set<std::string>& moved) {
    CheckpointMergePlan plan;
    plan.checkpoint = checkpoint.id;
    std::set<std::string> on_path;
    for (const auto* c : checkpoint_path_to_current(tree)) on_path.insert(c->id);
    for (const auto& d : tree.active)
        plan.disks.push_back(plan_disk(tree, checkpoint, d.target, on_path, running, moved));
    plan.resets_tracking = !running && on_path.contains(checkpoint.id);
    return plan;
}

void record_disk_merged(CheckpointTree& tree, const DiskMergePlan& disk) {
    if (!disk.has_keep) return;
    if (disk.keep_owner == kNowOwner) {
        set_image(tree.active, disk.target, disk.layer);
        return;
    }
    for (auto& c : tree.checkpoints)
        if (c.id == disk.keep_owner) set_image(c.disks, disk.target, disk.layer);
}

CheckpointTree tree_after_merge(const CheckpointTree& tree, const CheckpointMergePlan& plan) {
    CheckpointTree out = tree;
    for (const auto& d : plan.disks) record_disk_merged(out, d);
    auto gone = std::find_if(out.checkpoints.begin(), out.checkpoints.end(),
                             [&](const Checkpoint& c) { return c.id == plan.checkpoint; });
    if (gone == out.checkpoints.end()) return out;
    const std::string parent = gone->parent;
    out.checkpoints.erase(gone);
    for (auto& c : out.checkpoints)
        if (c.parent == plan.checkpoint) c.parent = parent;
    if (out.current == plan.checkpoint) out.current = parent;
    return out;
}

std::vector<std::string> subtree_deletion_order(const CheckpointTree& tree, const std::string& id) {
    std::vector<std::string> order;
    for (const auto* child : checkpoint_children(tree, id)) {
        auto below = subtree_deletion_order(tree, child->id);
        order.insert(order.end(), below.begin(), below.end());
    }
    order.push_back(id);
    return order;
}

std::vector<std::string> images_in_record(const CheckpointTree& tree) {
    std::set<std::string> images;
    for (const auto& d : tree.active) images.insert(d.image);
    for (const auto& c : tree.checkpoints)
        for (const auto& d : c.disks) images.insert(d.image);
    return {images.begin(), images.end()};
}

}  // namespace vmshadow::engine
