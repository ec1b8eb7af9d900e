// SPDX-License-Identifier: MIT
// restore_vm's steps 3.–6. (vm_restore.h): the journal, PreRestore, the swap, PostRestore.
#include <filesystem>
#include <memory>
#include <optional>

#include "common/test_hook.h"
#include "engine/restore_journal.h"
#include "engine/vm_restore_plan.h"
#include "virt/domain_xml.h"
#include "vmwriter/vm_restore_writer.h"
#include "vss/restore_coordinator.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

// The journal of this in-place restore, not yet saved: the old VM as it is, the new one on
// the staged files and on the final names, and every file's names.
Result<RestoreJournal> prepare_journal(const std::optional<virt::Domain>& existing,
                                       const std::vector<Placement>& placements,
                                       vmwriter::DomainRewriteSpec spec,
                                       const std::string& stored_xml, const std::string& final_xml,
                                       const std::optional<fs::path>& memory_file,
                                       const VmRestoreOptions& options,
                                       const VmRestoreResult& result) {
    RestoreJournal j;
    j.path = RestoreJournal::path_for(placements.front().final_path.parent_path(), result.vm);
    j.vm = result.vm;
    j.point = result.point;
    j.start = options.start;
    j.final_xml = final_xml;
    if (memory_file) j.memory_file = memory_file->string();
    if (existing) {
        auto xml = existing->xml(virt::XmlFlavor::inactive);
        if (!xml) return std::unexpected(xml.error());
        j.old_xml = std::move(*xml);
        j.old_uuid = existing->uuid();
        auto state = existing->state();
        j.old_was_running = state && *state == virt::DomainState::running;
    }
    for (const auto& p : placements) {
        if (p.disk) spec.disks[p.name] = {p.written.string(), options.format};
        if (p.file) spec.boot_files[p.name] = p.written.string();
        std::error_code ec;
        j.files.push_back({p.final_path.string(), p.written.string(),
                           p.final_path.string() + ".vmshadow-old", fs::exists(p.final_path, ec)});
    }
    auto staged = vmwriter::rewrite_domain_xml(stored_xml, spec);
    if (!staged) return std::unexpected(staged.error());
    j.staged_xml = std::move(staged->xml);
    auto desc = virt::parse_domain_xml(final_xml);
    if (!desc) return std::unexpected(desc.error());
    j.new_uuid = desc->uuid;
    return j;
}

// In place: the journal saved and the old files linked aside, before anything is replaced.
Result<std::optional<RestoreJournal>> stage_journal(const VmRestoreOptions& options,
                                                    const VmRestorePlan& plan,
                                                    const vmwriter::DomainRewriteSpec& spec,
                                                    const std::string& final_xml,
                                                    const std::optional<fs::path>& memory_file,
                                                    const VmRestoreResult& result) {
    std::optional<RestoreJournal> journal;
    if (plan.in_place) {
        auto prepared = prepare_journal(plan.existing, plan.placements, spec, plan.stored_xml,
                                        final_xml, memory_file, options, result);
        if (!prepared) return std::unexpected(prepared.error().with_context(plan.label()));
        journal = std::move(*prepared);
    }
    test_kill_point("staged");
    if (journal) {
        if (auto st = journal->save(); !st) return std::unexpected(st.error());
        if (auto st = journal->link_aside(); !st) {
            journal->remove_leftovers();
            return fail(st.error().kind(),
                        "restore of '" + result.vm +
                            "' failed before anything was replaced: " + st.error().message() +
                            "; the VM was left as it was and the restored "
                            "files were removed: fix the cause and run the "
                            "restore again with --replace");
        }
        test_kill_point("journal");
    }
    return journal;
}

// 5. The journal's commit and swap; a failure puts the old VM back on its files.
Status swap_journal(const virt::Connection& connection, RestoreJournal& journal,
                    vss::RestoreCoordinator& coordinator, const vss::ComponentEntry& component,
                    WrittenFiles& written, const std::string& vm) {
    Status swapped = journal.commit(connection);
    if (swapped) test_kill_point("committed");
    if (swapped) swapped = journal.swap();
    if (!swapped) {
        // The old files are still aside: the old VM comes back on them, and the writer
        // starts it again if it ran.
        auto back = journal.roll_back(connection, false);
        if (!back) written.keep = true;  // the journal still names them
        (void)coordinator.set_file_restore_status(component.key, vss::FileRestoreStatus::none);
        auto started_again = back ? coordinator.post_restore() : Status(back);
        return fail(
            swapped.error().kind(),
            "restore of '" + vm +
                "' failed before anything was replaced: " + swapped.error().message() + "; " +
                (started_again ? "VM '" + vm + "' was put back as it was"
                               : "putting the old VM back: " + started_again.error().message() +
                                     (back ? ""
                                           : " (journal " + journal.path.string() +
                                                 " kept: the next restore "
                                                 "of this VM finishes it)")) +
                "; the restored files were removed: fix the cause and run the "
                "restore again with --replace");
    }
    test_kill_point("swapped");
    return {};
}

// 6. PostRestore's outcome: what is left where if it failed.
Status after_post_restore(const Status& post, const std::optional<RestoreJournal>& journal,
                          bool defined, const std::optional<fs::path>& memory_file,
                          const VmRestorePlan& plan, const std::string& vm) {
    if (journal && defined) {
        journal->remove_leftovers();
    } else if (journal) {
        // Defined on the staged files: complete; the next in-place restore finishes the names.
        return fail(post.error().kind(),
                    post.error().message() + " (VM '" + vm +
                        "' is defined on the restored files, named *" + kRestoreSuffix +
                        "; run the same restore command again to finish; journal " +
                        journal->path.string() + ")");
    } else if (memory_file) {
        std::error_code ec;
        fs::remove(*memory_file, ec);
    }
    if (!post) {
        return fail(post.error().kind(),
                    post.error().message() + " (the restored disks are in place at " +
                        plan.placements.front().final_path.parent_path().string() + ")");
    }
    return {};
}

}  // namespace

// 3.–6. PreRestore, swap, PostRestore. In place, a journal makes the swap a transaction
// (restore_journal.h): at every instant the old VM or the new one is defined on complete
// files, and the next run finishes or rolls back what a killed one left.
Status swap_and_define(const virt::Connection& connection, const VmRestoreOptions& options,
                       const VmRestorePlan& plan, const vss::ComponentEntry& component,
                       const vmwriter::DomainRewriteSpec& spec, const std::string& final_xml,
                       const std::optional<fs::path>& memory_file, WrittenFiles& written,
                       VmRestoreResult& result) {
    auto staged = stage_journal(options, plan, spec, final_xml, memory_file, result);
    if (!staged) return std::unexpected(staged.error());
    std::optional<RestoreJournal>& journal = *staged;
    vmwriter::VmRestoreTarget target;
    target.component = component.key;
    target.name = result.vm;
    target.replace = options.replace;
    target.xml = final_xml;
    if (memory_file) target.memory_file = memory_file->string();
    target.start = options.start;
    auto writer = std::make_shared<vmwriter::VmRestoreWriter>(connection, target);
    vss::RestoreOptions ro;
    ro.vms = {result.vm};
    if (options.state_file) ro.state_file = *options.state_file;
    vss::RestoreCoordinator coordinator({writer}, plan.document, ro);
    auto give_up = [&](const Error& e) {
        if (journal) journal->remove_leftovers();
        return std::unexpected(e);
    };
    if (auto m = coordinator.gather_writer_metadata(); !m) return give_up(m.error());
    if (auto st = coordinator.select_for_restore(component.key); !st) return give_up(st.error());
    if (auto st = coordinator.pre_restore(); !st) {
        (void)coordinator.post_restore();  // status none: puts back anything taken away
        return give_up(st.error());
    }
    result.replaced = writer->outcome().removed_existing;
    test_kill_point("stopped");
    if (journal) {
        if (auto st =
                swap_journal(connection, *journal, coordinator, component, written, result.vm);
            !st)
            return st;
    }
    written.keep = true;
    if (auto st = coordinator.set_file_restore_status(component.key, vss::FileRestoreStatus::all);
        !st)
        return std::unexpected(st.error());
    auto post = coordinator.post_restore();
    if (auto st = after_post_restore(post, journal, writer->outcome().defined, memory_file, plan,
                                     result.vm);
        !st)
        return st;
    result.resumed = writer->outcome().resumed;
    result.started = writer->outcome().started || result.resumed;
    return {};
}

}  // namespace vmshadow::engine
