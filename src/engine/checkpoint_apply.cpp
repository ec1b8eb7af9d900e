// SPDX-License-Identifier: MIT
// apply_checkpoint, rename_checkpoint and list_checkpoints (checkpoint_ops.h).
//
// Apply prepares everything that can fail without touching the VM (layers present, memory
// image readable, fresh overlays made, XML rewritten), then destroys the VM and puts it onto
// the overlays. If that fails, the VM is put back on the disks it had and started again if
// it ran (its memory is gone by then: it boots from its disks), and the new overlays go.
#include <filesystem>
#include <optional>

#include "common/time_format.h"
#include "engine/checkpoint_ops.h"
#include "engine/checkpoint_session.h"
#include "virt/lifecycle.h"
#include "virt/snapshot.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

void remove_files(const std::vector<CheckpointDisk>& disks) {
    for (const auto& d : disks) {
        std::error_code ec;
        fs::remove(d.image, ec);
    }
}

struct ApplyPlan {
    std::vector<CheckpointDisk> overlays;
    std::string definition;              // the inactive XML the VM is defined with
    std::optional<std::string> restore;  // standard: the dxml of the memory image
};

Result<ApplyPlan> prepare_apply(virt::Connection& connection, const CheckpointSession& s,
                                const Checkpoint& c) {
    for (const auto& d : c.disks) {
        std::error_code ec;
        if (!fs::exists(d.image, ec))
            return fail(ErrorKind::corruption, "checkpoint '" + c.name + "' of vm '" +
                                                   s.domain.name() + "': its layer " + d.image +
                                                   " of disk " + d.target + " is missing");
    }
    ApplyPlan plan;
    std::optional<std::string> saved;
    if (c.type == CheckpointType::standard) {
        auto xml = virt::saved_image_xml(connection, c.memory_file);
        if (!xml)
            return fail(xml.error().with_context("checkpoint '" + c.name +
                                                 "': its memory image cannot be read"));
        saved = *xml;
    }
    for (const auto& d : c.disks) {
        plan.overlays.push_back({d.target, new_overlay_path(d.image)});
        if (auto st = virt::create_overlay(plan.overlays.back().image, d.image); !st) {
            remove_files(plan.overlays);
            return fail(st.error());
        }
    }
    auto definition = domain_xml_on_images(c.domain_xml, plan.overlays);
    if (!definition) {
        remove_files(plan.overlays);
        return fail(definition.error().with_context("checkpoint '" + c.name + "'"));
    }
    plan.definition = *definition;
    if (saved) {
        auto restore = domain_xml_on_images(*saved, plan.overlays);
        if (!restore) {
            remove_files(plan.overlays);
            return fail(restore.error().with_context("checkpoint '" + c.name + "'"));
        }
        plan.restore = *restore;
    }
    return plan;
}

// The VM back on its old disks after a failed switch (started again when it ran).
Error roll_back(virt::Connection& connection, CheckpointSession& s, const std::string& old_xml,
                bool was_active, const ApplyPlan& plan, const Error& why) {
    std::string outcome = "it is back on its disks as they were";
    if (auto put = connection.define(old_xml); !put)
        outcome = "putting it back on its disks failed too (" + put.error().message() + ")";
    else if (was_active && !virt::start_domain(s.domain))
        outcome += ", but could not be started again";
    else if (was_active)
        outcome += " and started from them (its memory was discarded)";
    remove_files(plan.overlays);
    return Error(why.kind(),
                 s.domain.label() + ": apply failed (" + why.message() + "); " + outcome);
}

}  // namespace

Result<CheckpointApplyOutcome> apply_checkpoint(virt::Connection& connection,
                                                const CheckpointApplyOptions& options,
                                                TaskContext& task) {
    auto session = open_checkpoint_session(connection, options.vm, "checkpoint apply");
    if (!session) return fail(session.error());
    CheckpointSession& s = *session;
    auto found = find_checkpoint(s.tree, options.checkpoint);
    if (!found) return fail(found.error());
    const Checkpoint c = **found;
    if (auto st = check_can_apply(s.tree, c); !st) return fail(st.error());
    if (auto st = refuse_if_shadowed(s.domain, "checkpoint apply"); !st) return fail(st.error());

    task.phase("apply: prepare overlays");
    auto plan = prepare_apply(connection, s, c);
    if (!plan) return fail(plan.error());
    auto old_xml = s.domain.xml(virt::XmlFlavor::inactive);
    if (!old_xml) {
        remove_files(plan->overlays);
        return fail(old_xml.error());
    }

    task.phase("apply: switch the VM");
    const bool was_active = s.active();
    if (was_active)
        if (auto st = virt::destroy_domain(s.domain); !st) {
            remove_files(plan->overlays);
            return fail(st.error());
        }
    Status switched = virt::remove_managed_save(s.domain);
    if (switched) {
        auto defined = connection.define(plan->definition);
        if (!defined) switched = fail(defined.error());
    }
    if (switched && plan->restore)
        switched = virt::restore_saved_state(connection, c.memory_file, plan->restore, true);
    if (!switched)
        return fail(roll_back(connection, s, *old_xml, was_active, *plan, switched.error()));

    CheckpointApplyOutcome outcome;
    outcome.applied = c;
    outcome.running = plan->restore.has_value();
    // The state left behind: its overlays belong to no checkpoint (active never does).
    for (const auto& d : s.tree.active) {
        outcome.discarded.push_back(d.image);
        std::error_code ec;
        fs::remove(d.image, ec);
        if (ec)
            task.warn("could not remove the discarded overlay " + d.image + ": " + ec.message());
    }
    const std::int64_t now = unix_seconds(task.clock().now());
    s.tree.current = c.id;
    s.tree.active = plan->overlays;
    s.tree.tracking_reset_at = now;
    s.tree.tracking_reset_reason = "returned to checkpoint '" + c.name + "' at " + iso8601_utc(now);
    if (auto st = save_checkpoint_tree(s.tree); !st)
        return fail(st.error().with_context(s.domain.label() + " was put on checkpoint '" + c.name +
                                            "' but that could not be recorded"));
    if (!outcome.running && options.start) {
        if (auto st = virt::start_domain(s.domain); !st)
            return fail(st.error().with_context("checkpoint '" + c.name +
                                                "' was applied, but the VM did not start"));
        outcome.running = true;
    }
    task.info(s.domain.label() + ": applied checkpoint '" + c.name + "'");
    return outcome;
}

Status rename_checkpoint(virt::Connection& connection, const std::string& vm,
                         const std::string& checkpoint, const std::string& new_name) {
    auto session = open_checkpoint_session(connection, vm, "checkpoint rename");
    if (!session) return fail(session.error());
    auto found = find_checkpoint(session->tree, checkpoint);
    if (!found) return fail(found.error());
    if ((*found)->name == new_name) return {};
    if (auto st = check_new_checkpoint_name(session->tree, new_name); !st) return st;
    for (auto& c : session->tree.checkpoints)
        if (c.id == (*found)->id) c.name = new_name;
    return save_checkpoint_tree(session->tree);
}

Result<CheckpointTree> list_checkpoints(virt::Connection& connection, const std::string& vm) {
    auto domain = connection.lookup(vm);
    if (!domain) return fail(domain.error());
    auto tree = load_checkpoint_tree(domain->uuid());
    if (!tree) return fail(tree.error());
    tree->vm_name = domain->name();
    return tree;
}

}  // namespace vmshadow::engine
