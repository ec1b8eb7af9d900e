// SPDX-License-Identifier: MIT
// Deleting checkpoints (checkpoint_ops.h): each checkpoint's layer merged into what depends on
// it, per checkpoint_merge_plan.h, while the VM runs (libvirt block commit) or is off
// (qemu-img). The record is saved after every commit, so a failure part-way leaves a record
// that says what happened and that a second `checkpoint delete` finishes.
#include <chrono>
#include <filesystem>
#include <set>

#include "engine/checkpoint_merge_plan.h"
#include "engine/checkpoint_ops.h"
#include "engine/vm_lock.h"
#include "virt/block_commit.h"
#include "virt/connection.h"
#include "virt/domain.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

struct DeleteRun {
    virt::Domain& domain;
    CheckpointTree& tree;
    bool running = false;
    TaskContext& task;
    virt::BlockJobWait wait;
    CheckpointDeleteOutcome outcome;
};

std::string owner_name(const CheckpointTree& tree, const std::string& owner) {
    if (owner == kNowOwner) return "now";
    auto c = find_checkpoint(tree, owner);
    return c ? "checkpoint '" + (*c)->name + "'" : owner;
}

// The record must describe the disks the VM uses now; merging from a stale record (a VM
// restored or its disks changed outside vmshadow) would write into the wrong files.
Status check_record_matches_vm(const virt::Domain& domain, const CheckpointTree& tree,
                               bool running) {
    auto xml = domain.xml(running ? virt::XmlFlavor::live : virt::XmlFlavor::inactive);
    if (!xml) return fail(xml.error());
    auto description = virt::parse_domain_xml(*xml);
    if (!description) return fail(description.error());
    for (const auto& active : tree.active) {
        auto disk =
            std::find_if(description->disks.begin(), description->disks.end(),
                         [&](const virt::DiskSpec& d) { return d.target == active.target; });
        std::string now = disk == description->disks.end() ? "no such disk" : disk->path;
        if (now != active.image)
            return fail(ErrorKind::conflict,
                        domain.label() + ": disk " + active.target + " is " + now +
                            " but its checkpoint record says " + active.image +
                            ": the disks changed outside vmshadow, so no checkpoint is merged "
                            "(the record is " +
                            (checkpoint_folder(tree.vm_uuid) / "tree.json").string() + ")");
    }
    return {};
}

// Dependants of the checkpoint's layers whose file no longer rests on the layer (pulled by
// an attempt that failed later).
Result<std::set<std::string>> moved_dependants(const CheckpointTree& tree, const Checkpoint& c) {
    std::set<std::string> moved;
    for (const auto& layer : c.disks) {
        std::vector<std::string> images;
        for (const auto* child : checkpoint_children(tree, c.id))
            for (const auto& d : child->disks)
                if (d.target == layer.target) images.push_back(d.image);
        if (tree.current == c.id)
            for (const auto& d : tree.active)
                if (d.target == layer.target) images.push_back(d.image);
        for (const auto& image : images) {
            if (image == layer.image) continue;
            auto backing = virt::image_backing_file(image);
            if (!backing) return std::unexpected(backing.error());
            if (*backing != layer.image) moved.insert(image);
        }
    }
    return moved;
}

// The images the running VM has open: qemu-img must never write to one.
bool open_in_vm(const DeleteRun& run, const std::string& image) {
    if (!run.running) return false;
    for (const auto& d : run.tree.active)
        if (d.image == image) return true;
    for (const auto* c : checkpoint_path_to_current(run.tree))
        for (const auto& d : c->disks)
            if (d.image == image) return true;
    return false;
}

Status pull_layer(DeleteRun& run, const DiskMergePlan& disk, const std::string& image) {
    if (auto st = run.task.check_cancel("checkpoint delete"); !st) return st;
    if (open_in_vm(run, image))
        return fail(ErrorKind::internal, image +
                                             " is open in the running VM: it cannot be "
                                             "rebased with qemu-img");
    auto done = virt::rebase_image(image, disk.layer_backing, run.wait.deadline);
    if (!done) return done;
    run.outcome.merges.push_back(disk.target + ": " + image + " took in the data of " + disk.layer +
                                 (disk.layer_backing.empty()
                                      ? " and stands alone"
                                      : " and now rests on " + disk.layer_backing));
    return {};
}

Status commit_keep(DeleteRun& run, const DiskMergePlan& disk) {
    if (auto st = run.task.check_cancel("checkpoint delete"); !st) return st;
    switch (disk.keep_merge) {
        case LayerMerge::commit_active:
            return virt::commit_active(run.domain, disk.target, disk.layer, run.wait);
        case LayerMerge::commit_intermediate:
            if (auto st = virt::commit_intermediate(run.domain, disk.target, disk.keep_image,
                                                    disk.layer, run.wait);
                !st)
                return st;
            break;
        case LayerMerge::commit_offline:
            if (auto st = virt::commit_image(disk.keep_image, run.wait.deadline); !st) return st;
            break;
    }
    // keep's file and the layer read the same now: whatever rested on keep can rest on the
    // layer (libvirt re-pointed the image it has open).
    for (const auto& image : disk.repoint)
        if (auto st = virt::rebase_image_header(image, disk.layer); !st) return st;
    return {};
}

void remove_file(DeleteRun& run, const std::string& path) {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove(path, ec);
    if (ec)
        run.task.warn("could not remove " + path + ": " + ec.message() + " (remove it by hand)");
}

// The failure of one disk's merge, recorded: a checkpoint whose layer took data already is
// marked so (its own content is gone; a second delete finishes the job).
Error record_failure(DeleteRun& run, const Checkpoint& c, bool layer_changed, Error why) {
    if (!layer_changed) return why;
    for (auto& rec : run.tree.checkpoints)
        if (rec.id == c.id)
            rec.note = "deleting it stopped part-way (" + why.message() +
                       "): its layer already holds its dependant's data; run `vmshadow "
                       "checkpoint delete` again to finish";
    if (auto st = save_checkpoint_tree(run.tree); !st)
        return why.with_context("the checkpoint record could not be saved either (" +
                                st.error().message() + ")");
    return why;
}

Status merge_disk(DeleteRun& run, const DiskMergePlan& disk, bool& layer_changed) {
    for (const auto& image : disk.pull)
        if (auto st = pull_layer(run, disk, image); !st) return st;
    if (!disk.has_keep) return {};
    run.task.phase("merge", 0, 0, run.domain.name() + "/" + disk.target);
    layer_changed = true;  // from the start of a commit, the layer takes keep's data
    if (auto st = commit_keep(run, disk); !st) return st;
    record_disk_merged(run.tree, disk);
    if (auto st = save_checkpoint_tree(run.tree); !st) return st;
    remove_file(run, disk.keep_image);
    run.outcome.merges.push_back(disk.target + ": committed " + disk.keep_image + " into " +
                                 disk.layer + " (" + owner_name(run.tree, disk.keep_owner) +
                                 " now uses it)");
    return {};
}

Status delete_one(DeleteRun& run, const std::string& id) {
    auto found = find_checkpoint(run.tree, id);
    if (!found) return fail(found.error());
    const Checkpoint c = **found;
    auto moved = moved_dependants(run.tree, c);
    if (!moved) return fail(moved.error().with_context("checkpoint '" + c.name + "'"));
    const auto plan = plan_checkpoint_merge(run.tree, c, run.running, *moved);
    bool layer_changed = false;
    for (const auto& disk : plan.disks)
        if (auto st = merge_disk(run, disk, layer_changed); !st)
            return fail(record_failure(run, c, layer_changed,
                                       st.error().with_context("delete checkpoint '" + c.name +
                                                               "', disk " + disk.target)));
    CheckpointTree after = tree_after_merge(run.tree, plan);
    if (plan.resets_tracking) {
        after.tracking_reset_at = std::chrono::duration_cast<std::chrono::seconds>(
                                      run.task.clock().now().time_since_epoch())
                                      .count();
        after.tracking_reset_reason =
            "checkpoint '" + c.name +
            "' was merged while the VM was off (qemu-img does not carry libvirt's dirty bitmaps)";
    }
    if (auto st = save_checkpoint_tree(after); !st) return st;
    run.tree = std::move(after);
    const auto used = images_in_record(run.tree);
    for (const auto& d : c.disks)
        if (std::find(used.begin(), used.end(), d.image) == used.end()) remove_file(run, d.image);
    remove_file(run, c.memory_file);
    run.outcome.deleted.push_back(c.name);
    return {};
}

}  // namespace

Result<CheckpointDeleteOutcome> delete_checkpoint(virt::Connection& connection,
                                                  const CheckpointDeleteOptions& options,
                                                  TaskContext& task) {
    auto domain = connection.lookup(options.vm);
    if (!domain) return std::unexpected(domain.error());
    auto lock = VmLock::acquire({{domain->name(), domain->uuid()}}, "checkpoint delete");
    if (!lock) return std::unexpected(lock.error());
    auto tree = load_checkpoint_tree(domain->uuid());
    if (!tree) return std::unexpected(tree.error());
    auto target = find_checkpoint(*tree, options.checkpoint);
    if (!target) return std::unexpected(target.error());
    auto state = domain->state();
    if (!state) return std::unexpected(state.error());
    const bool running = *state != virt::DomainState::shutoff;
    if (auto st = check_record_matches_vm(*domain, *tree, running); !st)
        return std::unexpected(st.error());
    if (!options.subtree && !checkpoint_children(*tree, (*target)->id).empty())
        task.info("its children stay: their layers take in what they need of '" + (*target)->name +
                  "'");
    const auto order = options.subtree ? subtree_deletion_order(*tree, (*target)->id)
                                       : std::vector<std::string>{(*target)->id};
    DeleteRun run{*domain, *tree, running, task, {}, {}};
    run.wait.cancel = &task.cancel();
    run.wait.progress = [&task](std::uint64_t done, std::uint64_t total) {
        task.set_bytes_total(total);
        task.bytes_done(done);
    };
    for (const auto& id : order)
        if (auto st = delete_one(run, id); !st) return std::unexpected(st.error());
    return run.outcome;
}

}  // namespace vmshadow::engine
