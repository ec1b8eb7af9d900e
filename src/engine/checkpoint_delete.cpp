// SPDX-License-Identifier: MIT
// Deleting checkpoints (checkpoint_ops.h): each checkpoint's layer merged into what depends on
// it, per checkpoint_merge_plan.h, while the VM runs (libvirt block commit) or is off
// (qemu-img). The record is saved after every commit, so a failure part-way leaves a record
// that says what happened and that a second `checkpoint delete` finishes.
#include <chrono>
#include <filesystem>
#include <set>

#include "common/test_hook.h"
#include "engine/checkpoint_merge_plan.h"
#include "engine/checkpoint_ops.h"
#include "engine/checkpoint_session.h"
#include "virt/block_commit.h"
#include "virt/block_copy.h"
#include "virt/connection.h"
#include "virt/domain.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

struct DeleteRun {
    virt::Connection& connection;
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
    run.task.phase("pull", 0, 0, run.domain.name() + "/" + disk.target);
    auto done = virt::rebase_image(image, disk.layer_backing, run.wait.deadline);
    if (!done) return done;
    run.outcome.merges.push_back(disk.target + ": " + image + " took in the data of " + disk.layer +
                                 (disk.layer_backing.empty()
                                      ? " and stands alone"
                                      : " and now rests on " + disk.layer_backing));
    return {};
}

Status start_and_wait(DeleteRun& run, const DiskMergePlan& disk) {
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
    return {};
}

// A commit a killed vmshadow started ran on in QEMU: an intermediate one completes by itself,
// an active one was pivoted just before the kill. The chain says whether it is done.
Result<bool> committed_before(DeleteRun& run, const DiskMergePlan& disk) {
    if (disk.keep_merge == LayerMerge::commit_offline) return false;
    auto chain = virt::running_chain(run.domain, disk.target);
    if (!chain) return std::unexpected(chain.error());
    auto holds = [&](const std::string& f) {
        return std::find(chain->begin(), chain->end(), f) != chain->end();
    };
    if (disk.keep_merge == LayerMerge::commit_active)
        return !chain->empty() && chain->front() == disk.layer;
    return holds(disk.layer) && !holds(disk.keep_image);
}

Status commit_keep(DeleteRun& run, const DiskMergePlan& disk) {
    if (auto st = run.task.check_cancel("checkpoint delete"); !st) return st;
    auto done = committed_before(run, disk);
    if (!done) return fail(done.error());
    if (*done) {
        run.task.info(disk.target + ": " + disk.keep_image + " was committed into " + disk.layer +
                      " by an earlier attempt");
    } else if (auto st = start_and_wait(run, disk); !st) {
        return st;
    }
    // keep's file and the layer read the same now: whatever rested on keep can rest on the
    // layer (libvirt re-pointed the image it has open).
    for (const auto& image : disk.repoint)
        if (auto st = virt::rebase_image_header(image, disk.layer); !st) return st;
    return {};
}

// A block job on a disk (a commit a killed vmshadow left, a copy of another tool): merging
// now would fail half-way, so nothing starts; the error says how to end it.
Status refuse_running_jobs(DeleteRun& run) {
    if (!run.running) return {};
    for (const auto& d : run.tree.active) {
        auto job = virt::block_job_progress(run.domain, d.target);
        if (!job) return fail(job.error());
        if (job->running)
            return fail(ErrorKind::conflict,
                        run.domain.label() + ", disk " + d.target +
                            ": a block job runs on it (perhaps a merge of a vmshadow that was "
                            "killed): end it with `virsh blockjob " +
                            run.domain.name() + " " + d.target +
                            " --abort` (the chain stays as it was), then delete again");
    }
    return {};
}

void remove_file(DeleteRun& run, const std::string& path) {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove(path, ec);
    if (ec)
        run.task.warn("could not remove " + path + ": " + ec.message() + " (remove it by hand)");
}

Checkpoint* record_of(DeleteRun& run, const std::string& id) {
    for (auto& rec : run.tree.checkpoints)
        if (rec.id == id) return &rec;
    return nullptr;
}

// Before the first commit into the checkpoint's layer: from then on its own content may be
// gone, and a vmshadow killed during the commit must still leave a record that says so
// (apply refuses such a checkpoint; the same delete finishes it).
Status mark_delete_unfinished(DeleteRun& run, const std::string& id) {
    Checkpoint* rec = record_of(run, id);
    if (!rec || rec->delete_unfinished) return {};
    rec->delete_unfinished = true;
    return save_checkpoint_tree(run.tree);
}

// The failure of one disk's merge, recorded: a checkpoint whose layer took data already says
// why in its note (its own content is gone; a second delete finishes the job).
Error record_failure(DeleteRun& run, const Checkpoint& c, bool layer_changed, Error why) {
    if (!layer_changed) return why;
    if (Checkpoint* rec = record_of(run, c.id)) {
        rec->delete_unfinished = true;
        rec->note = "deleting it stopped part-way (" + why.message() +
                    "): its layer already holds its dependant's data; run `" +
                    finish_delete_command(run.tree, *rec) + "` again to finish";
    }
    if (auto st = save_checkpoint_tree(run.tree); !st)
        return why.with_context("the checkpoint record could not be saved either (" +
                                st.error().message() + ")");
    return why;
}

Status merge_disk(DeleteRun& run, const std::string& id, const DiskMergePlan& disk,
                  bool& layer_changed) {
    for (const auto& image : disk.pull)
        if (auto st = pull_layer(run, disk, image); !st) return st;
    test_kill_point("checkpoint-delete-pulled");
    if (!disk.has_keep) return {};
    run.task.phase("merge", 0, 0, run.domain.name() + "/" + disk.target);
    if (auto st = mark_delete_unfinished(run, id); !st) return st;
    layer_changed = true;  // from the start of a commit, the layer takes keep's data
    if (auto st = commit_keep(run, disk); !st) return st;
    test_kill_point("checkpoint-delete-committed");
    record_disk_merged(run.tree, disk);
    if (auto st = save_checkpoint_tree(run.tree); !st) return st;
    remove_file(run, disk.keep_image);
    run.outcome.merges.push_back(disk.target + ": committed " + disk.keep_image + " into " +
                                 disk.layer + " (" + owner_name(run.tree, disk.keep_owner) +
                                 " now uses it)");
    return {};
}

// The domain's definition names its disks' backing chains once it ran (<backingStore>): after
// a merge that chain is stale (a merged file gone), so the definition is put on the active
// images without a chain — QEMU reads it from the images. For a running VM this is the
// definition its next start uses.
Status redefine_on_active_images(DeleteRun& run) {
    auto xml = run.domain.xml(virt::XmlFlavor::inactive);
    if (!xml) return fail(xml.error());
    auto moved = domain_xml_on_images(*xml, run.tree.active);
    if (!moved) return fail(moved.error());
    auto defined = run.connection.define(*moved);
    if (!defined)
        return fail(defined.error().with_context(
            run.domain.label() +
            ": the merge is done and recorded, but its definition could not "
            "be updated"));
    return {};
}

Status delete_one(DeleteRun& run, const std::string& id) {
    auto found = find_checkpoint(run.tree, id);
    if (!found) return fail(found.error());
    const Checkpoint c = **found;
    auto moved = moved_dependants(run.tree, c);
    if (!moved) return fail(moved.error().with_context("checkpoint '" + c.name + "'"));
    auto plan = plan_checkpoint_merge(run.tree, c, run.running, *moved);
    // What the layer really rests on (the record knows only checkpoints: a root layer may be
    // an overlay of a base image the VM was created on).
    for (auto& disk : plan.disks) {
        auto backing = virt::image_backing_file(disk.layer);
        if (!backing) return fail(backing.error().with_context("checkpoint '" + c.name + "'"));
        disk.layer_backing = *backing;
    }
    bool layer_changed = false;
    for (const auto& disk : plan.disks)
        if (auto st = merge_disk(run, c.id, disk, layer_changed); !st)
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
    if (auto st = redefine_on_active_images(run); !st) return st;
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
    // The VM found, locked, its record loaded and checked against the disks it uses now (a
    // stale record would merge the wrong files).
    auto session = open_checkpoint_session(connection, options.vm, "checkpoint delete");
    if (!session) return std::unexpected(session.error());
    auto* domain = &session->domain;
    auto* tree = &session->tree;
    if (!session->active() && session->state != virt::DomainState::shutoff)
        return fail(ErrorKind::conflict,
                    domain->label() + " is " + std::string(virt::state_name(session->state)) +
                        ": its checkpoints are merged while it runs or when it is off; retry then");
    auto target = find_checkpoint(*tree, options.checkpoint);
    if (!target) return std::unexpected(target.error());
    if (auto st = refuse_if_shadowed(*domain, "checkpoint delete"); !st)
        return std::unexpected(st.error());
    const bool running = session->active();
    if (!options.subtree && !checkpoint_children(*tree, (*target)->id).empty())
        task.info("its children stay: their layers take in what they need of '" + (*target)->name +
                  "'");
    const auto order = options.subtree ? subtree_deletion_order(*tree, (*target)->id)
                                       : std::vector<std::string>{(*target)->id};
    DeleteRun run{connection, *domain, *tree, running, task, {}, {}};
    run.wait.cancel = &task.cancel();
    run.wait.progress = [&task](std::uint64_t done, std::uint64_t total) {
        task.set_bytes_total(total);
        task.bytes_done(done);
    };
    if (auto st = refuse_running_jobs(run); !st) return std::unexpected(st.error());
    for (const auto& id : order)
        if (auto st = delete_one(run, id); !st) return std::unexpected(st.error());
    return run.outcome;
}

}  // namespace vmshadow::engine
