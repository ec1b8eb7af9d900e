// SPDX-License-Identifier: MIT
#include "engine/vm_restore.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/test_hook.h"
#include "engine/checkpoint_forget.h"
#include "engine/image_jobs.h"
#include "engine/instant_recovery.h"
#include "engine/restore_journal.h"
#include "engine/restore_target.h"
#include "engine/vm_lock.h"
#include "engine/vm_point.h"
#include "engine/vm_restore_plan.h"
#include "repo/lock.h"
#include "repo/restore.h"
#include "virt/domain_xml.h"
#include "virt/lifecycle.h"
#include "vmwriter/domain_rewrite.h"
#include "vmwriter/vm_writer.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

// A write that failed because the target's filesystem has no room left says so, and what to
// do, instead of the NBD or write call's own words. The failed write's partial file is gone
// by now, so the free space no longer shows it: the error's own ENOSPC text does.
Error explain_full_disk(const Error& e, const Placement& p, bool in_place) {
    fs::path dir = p.written.parent_path();
    if (e.kind() != ErrorKind::io || e.message().find(std::strerror(ENOSPC)) == std::string::npos)
        return e;  // it names the disk already
    return Error(ErrorKind::io,
                 "disk " + p.name + ": the filesystem of " + dir.string() + " is full (writing " +
                     p.written.filename().string() + "): free space there" +
                     (in_place ? "" : " or restore --to a folder with room") + ", then retry");
}

// A VM restore writes files: a disk or boot file's place must be absent or a regular file
// (restore_target.h), and so must the temp name it is written to first. A block device is
// not written into here — the VM's XML would still call it a file — and says what to do.
Status check_vm_target(const Placement& p, bool in_place) {
    for (const fs::path& path : {p.final_path, p.written}) {
        auto target = inspect_restore_target(path.string());
        if (!target) return std::unexpected(target.error());
        if (target->kind == TargetKind::block_device) {
            return fail(in_place ? ErrorKind::unsupported : ErrorKind::invalid_argument,
                        p.name + ": " + path.string() +
                            " is a block device: a VM restore writes disk files; restore --as "
                            "NEW-NAME --to DIR, or write the disk into the device with `image "
                            "restore` (nothing was written)");
        }
        if (auto st = refuse_unwritable(*target, false); !st)
            return std::unexpected(st.error().with_context(p.name));
    }
    return {};
}

// The journal of an in-place restore of this VM that was killed (restore_journal.h): a
// "prepared" one is rolled back, a "committed" one finished. `finished` says the latter
// happened for this very point: then there is nothing left to do.
Status recover_interrupted(const virt::Connection& connection, const fs::path& folder,
                           VmRestoreResult& result, bool& finished) {
    auto journal = RestoreJournal::load(RestoreJournal::path_for(folder, result.vm));
    if (!journal) return std::unexpected(journal.error());
    if (!*journal) return {};
    bool forward = (*journal)->phase == "committed";
    auto note = (*journal)->recover(connection);
    if (!note) return std::unexpected(note.error());
    result.notes.push_back(*note);
    finished = forward && (*journal)->point == result.point;
    return {};
}
Status check_options(const VmRestoreOptions& options) {
    if (options.format != "raw" && options.format != "qcow2")
        return fail(ErrorKind::invalid_argument,
                    "--format must be qcow2 or raw, not " + options.format);
    if (!options.to_dir.empty() && !options.as_name)
        return fail(ErrorKind::invalid_argument,
                    "--to needs --as NAME (an in-place restore "
                    "puts the disks where they were)");
    return {};
}

// The point (under the repository's shared lock), its domain XML and backup document.
Status read_point(repo::Repository& repo, const VmRestoreOptions& options, VmRestorePlan& plan,
                  VmRestoreResult& result) {
    // Readers hold the shared lock for their whole life: gc must not remove what we read.
    auto opened = open_vm_point(repo, options.point, "restore", "use `vmshadow image restore`");
    if (!opened) return std::unexpected(opened.error());
    plan.opened = std::move(*opened);
    const repo::RestorePoint* point = &plan.point();
    const std::string& label = plan.label();
    result.point = point->id.hex();
    result.source_vm = point->vm;
    result.consistency = point->consistency;
    result.vm = options.as_name.value_or(point->vm);
    plan.in_place = !options.as_name;

    const repo::FileRecord* xml_record = find_file(*point, "domain_xml");
    const repo::FileRecord* doc_record = find_file(*point, "backup_document");
    if (!xml_record || !doc_record)
        return fail(ErrorKind::corruption, label + " lacks its domain XML or backup document");
    auto stored_xml = read_text(repo, *xml_record);
    if (!stored_xml) return std::unexpected(stored_xml.error().with_context(label));
    auto doc_text = read_text(repo, *doc_record);
    if (!doc_text) return std::unexpected(doc_text.error().with_context(label));
    auto document = vss::parse_backup_document(*doc_text);
    if (!document) return std::unexpected(document.error().with_context(label));
    auto desc = virt::parse_domain_xml(*stored_xml);
    if (!desc) return std::unexpected(desc.error().with_context(label));
    plan.stored_xml = std::move(*stored_xml);
    plan.document = std::move(*document);
    plan.desc = std::move(*desc);
    return {};
}

// The VM of the target name, if there is one.
Status look_up_existing(const virt::Connection& connection, VmRestorePlan& plan,
                        const std::string& vm) {
    auto existing = connection.lookup(vm);
    if (!existing && existing.error().kind() != ErrorKind::not_found)
        return std::unexpected(existing.error());
    plan.existing.reset();
    if (existing) plan.existing = std::move(*existing);
    return {};
}

// 1. Checks before anything is written: the VM's lock, an interrupted in-place restore of it
// finished or rolled back, a VM of that name only with --replace.
Status lock_target(const virt::Connection& connection, const VmRestoreOptions& options,
                   VmRestorePlan& plan, VmRestoreResult& result) {
    const repo::RestorePoint* point = &plan.point();
    const bool in_place = plan.in_place;
    if (auto st = look_up_existing(connection, plan, result.vm); !st) return st;
    auto& existing = plan.existing;
    if (point->disks.empty()) return fail(ErrorKind::corruption, plan.label() + " has no disks");
    // The VM's lock, before anything is touched: a backup or another restore of that VM makes
    // this one fail with a conflict naming it. --as locks the name it creates.
    std::vector<VmLockKey> lock_keys{{result.vm, in_place ? plan.desc.uuid : std::string()}};
    if (existing && existing->uuid() != lock_keys.front().uuid)
        lock_keys.push_back({result.vm, existing->uuid()});
    auto vm_lock = VmLock::acquire(
        lock_keys,
        options.instant ? "instant recovery" : (options.replace ? "restore --replace" : "restore"));
    if (!vm_lock) return std::unexpected(vm_lock.error());
    plan.vm_lock = std::move(*vm_lock);
    // An earlier in-place restore of this VM that was killed: finished or rolled back first.
    bool& finished_earlier = plan.finished_earlier;
    if (in_place) {
        auto recovered = recover_interrupted(
            connection, fs::path(point->disks.front().info.value("path", "")).parent_path(), result,
            finished_earlier);
        if (!recovered) return std::unexpected(recovered.error());
        if (auto st = look_up_existing(connection, plan, result.vm); !st) return st;
    }
    if (existing && !options.replace && !options.instant &&
        !finished_earlier) {  // instant: it may be resuming
        return fail(ErrorKind::conflict,
                    "a VM named '" + result.vm + "' exists: add --replace to replace it" +
                        (in_place ? ", or restore beside it with --as NEW-NAME" : ""));
    }
    return {};
}

// Where each disk and boot file ends up, and where it is written first.
Status place_files(const VmRestoreOptions& options, VmRestorePlan& plan, VmRestoreResult& result) {
    const repo::RestorePoint* point = &plan.point();
    const std::string& label = plan.label();
    const bool in_place = plan.in_place;
    fs::path& folder = plan.folder;
    if (!in_place) {
        std::string first = point->disks.front().info.value("path", "");
        folder = options.to_dir.empty() ? fs::path(first).parent_path() / *options.as_name
                                        : fs::path(options.to_dir);
        std::error_code ec;
        fs::create_directories(folder, ec);
        if (ec) return fail(ErrorKind::io, "create " + folder.string() + ": " + ec.message());
    }
    std::vector<Placement>& placements = plan.placements;
    auto place = [&](const std::string& name, const fs::path& original) {
        Placement p;
        p.name = name;
        p.final_path = in_place ? original : folder / original.filename();
        p.written = in_place ? fs::path(original.string() + kRestoreSuffix) : p.final_path;
        return p;
    };
    for (const auto& d : point->disks) {
        std::string original = d.info.value("path", "");
        if (original.empty())
            return fail(ErrorKind::corruption, label + ": disk " + d.name + " has no path");
        Placement p = place(d.name, original);
        p.disk = &d;
        placements.push_back(std::move(p));
    }
    for (const auto& [role, path] : plan.desc.boot.by_role()) {
        const repo::FileRecord* f = find_file(*point, role);
        if (!f) {
            result.notes.push_back(role + " " + path +
                                   " is not in the restore point: the VM uses the host's file");
            continue;
        }
        Placement p = place(role, path);
        p.file = f;
        placements.push_back(std::move(p));
    }
    return {};
}

// An interrupted in-place restore of this very point was finished: nothing left to do.
VmRestoreResult finished_earlier_result(const VmRestorePlan& plan, VmRestoreResult result) {
    for (const auto& p : plan.placements) {
        if (p.disk) result.disks.push_back({p.name, p.final_path.string(), p.disk->size});
        if (p.file) result.files.push_back({p.name, p.final_path.string(), p.file->size});
    }
    result.replaced = true;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - plan.started).count();
    return result;
}

// A file at a final name is overwritten only in place, with --replace.
Status check_final_paths(const VmRestoreOptions& options, const VmRestorePlan& plan) {
    for (const auto& p : plan.placements) {
        std::error_code ec;
        if (!fs::exists(p.final_path, ec)) continue;
        if (!plan.in_place) {
            return fail(ErrorKind::conflict,
                        p.final_path.string() + " exists: choose another folder with --to");
        }
        if (!options.replace) {
            // No VM of that name, but its files are still there: never overwrite them unasked.
            return fail(ErrorKind::conflict, p.final_path.string() +
                                                 " exists: add --replace to overwrite it, or "
                                                 "restore beside it with --as NEW-NAME");
        }
    }
    return {};
}

// Where the memory image of an `image` point is restored: only in place (it resumes there).
std::optional<fs::path> memory_file_for(const VmRestorePlan& plan, VmRestoreResult& result) {
    std::optional<fs::path> memory_file;
    const repo::FileRecord* memory = find_file(plan.point(), "memory");
    if (memory && plan.in_place) {
        memory_file = plan.placements.front().final_path.parent_path() /
                      (result.vm + ".vmshadow-memory.save");
    } else if (memory) {
        result.notes.push_back(
            "cold boot: the saved memory image was not used (libvirt refuses to resume a saved "
            "state under another name, UUID or MAC address)");
    }
    return memory_file;
}

// 2. Write everything beside the old files, then check it is all there.
Status write_beside(repo::Repository& repo, const VmRestoreOptions& options,
                    const VmRestorePlan& plan, const std::optional<fs::path>& memory_file,
                    WrittenFiles& written, VmRestoreResult& result) {
    const bool in_place = plan.in_place;
    for (const auto& p : plan.placements) {
        // Between files too, not only within a disk's chunks: a kernel or NVRAM file
        // written after a cancel would only be removed again.
        if (options.task && options.task->cancel().requested())
            return fail(ErrorKind::cancelled, "restore of '" + result.vm +
                                                  "' cancelled while writing: nothing was "
                                                  "changed (restored files removed)");
        written.paths.push_back(p.written);
        std::error_code ec;
        fs::remove(p.written, ec);  // a leftover of an earlier interrupted restore
        if (p.disk) {
            ImageRestoreOptions io;
            io.point = result.point;
            io.disk = p.disk->name;
            io.output = p.written.string();
            io.format = options.format;
            io.workers = options.workers;
            io.task = options.task;
            auto r = restore_image(repo, io);
            if (!r) {
                return std::unexpected(explain_full_disk(r.error(), p, in_place)
                                           .with_context("restore of '" + result.vm +
                                                         "' stopped before anything was changed "
                                                         "(restored files removed)"));
            }
            result.disks.push_back({p.name, p.final_path.string(), r->size});
        } else {
            if (auto st = write_point_file(repo, *p.file, p.written); !st)
                return std::unexpected(st.error());
            result.files.push_back({p.name, p.final_path.string(), p.file->size});
        }
        test_pause_point("restore-write");
    }
    if (memory_file) {
        written.paths.push_back(*memory_file);
        if (auto st = write_point_file(repo, *find_file(plan.point(), "memory"), *memory_file); !st)
            return std::unexpected(st.error());
    }
    std::vector<std::string> missing;
    for (const auto& p : plan.placements) {
        std::error_code ec;
        if (!fs::exists(p.written, ec)) missing.push_back(p.written.string());
    }
    if (!missing.empty()) {
        std::string names;
        for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
        return fail(ErrorKind::io, "restore incomplete, nothing was changed: missing " + names);
    }
    return {};
}

// The XML the VM is defined with.
Result<vmwriter::DomainRewrite> rewrite_for_target(const virt::Connection& connection,
                                                   const VmRestoreOptions& options,
                                                   const VmRestorePlan& plan,
                                                   vmwriter::DomainRewriteSpec& spec,
                                                   VmRestoreResult& result) {
    for (const auto& p : plan.placements) {
        if (p.disk) spec.disks[p.name] = {p.final_path.string(), options.format};
        if (p.file) spec.boot_files[p.name] = p.final_path.string();
    }
    spec.new_name = options.as_name;
    spec.log_dir = plan.in_place ? std::string() : plan.folder.string();
    spec.network_exists = [&](const std::string& n) {
        auto e = connection.network_exists(n);
        return e && *e;
    };
    spec.bridge_exists = bridge_exists;
    auto rewritten = vmwriter::rewrite_domain_xml(plan.stored_xml, spec);
    if (!rewritten) return std::unexpected(rewritten.error().with_context(plan.label()));
    for (auto& n : rewritten->notes) result.notes.push_back(std::move(n));
    return rewritten;
}

// The VM's component in the point's backup document.
Result<const vss::ComponentEntry*> find_vm_component(const VmRestorePlan& plan) {
    const vss::ComponentEntry* component = nullptr;
    for (const auto& c : plan.document.components)
        if (c.key.logical_path == vmwriter::kVmLogicalPath && c.key.name == plan.point().vm &&
            c.key.writer_id.rfind(vmwriter::kVmWriterId, 0) == 0)
            component = &c;
    if (!component)
        return fail(ErrorKind::corruption,
                    plan.label() + ": no VM component in its backup document");
    return component;
}

// The files written beside the old ones, then swapped in: restore in place or --as.
Result<VmRestoreResult> restore_from_files(repo::Repository& repo,
                                           const virt::Connection& connection,
                                           const VmRestoreOptions& options,
                                           const VmRestorePlan& plan, VmRestoreResult result) {
    if (auto st = check_final_paths(options, plan); !st) return std::unexpected(st.error());
    std::optional<fs::path> memory_file = memory_file_for(plan, result);
    WrittenFiles written;
    if (auto st = write_beside(repo, options, plan, memory_file, written, result); !st)
        return std::unexpected(st.error());
    test_pause_point("restore-before-swap");
    // The last moment a cancel is honoured: after it the swap runs to its end.
    if (options.task && options.task->cancel().requested()) {
        return fail(ErrorKind::cancelled, "restore of '" + result.vm +
                                              "' cancelled before the swap: nothing was changed "
                                              "(restored files removed)");
    }
    vmwriter::DomainRewriteSpec spec;
    auto rewritten = rewrite_for_target(connection, options, plan, spec, result);
    if (!rewritten) return std::unexpected(rewritten.error());
    auto component = find_vm_component(plan);
    if (!component) return std::unexpected(component.error());
    if (auto st = swap_and_define(connection, options, plan, **component, spec, rewritten->xml,
                                  memory_file, written, result);
        !st)
        return std::unexpected(st.error());
    if (result.replaced)
        result.notes.push_back(
            "the VM's checkpoints were removed with it: its next backup is full");
    if (plan.in_place)
        forget_replaced_checkpoints(
            plan, {plan.desc.uuid, plan.existing ? plan.existing->uuid() : std::string()}, result);
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - plan.started).count();
    return result;
}

}  // namespace

void forget_replaced_checkpoints(const VmRestorePlan& plan, const std::set<std::string>& uuids,
                                 VmRestoreResult& result) {
    std::vector<std::string> in_use;
    for (const auto& p : plan.placements) in_use.push_back(p.final_path.string());
    for (const auto& uuid : uuids) {
        if (uuid.empty()) continue;
        auto notes = forget_checkpoints(uuid, in_use);
        if (!notes) {
            result.notes.push_back("its old checkpoint record could not be removed (" +
                                   notes.error().message() + ")");
            continue;
        }
        for (auto& n : *notes) result.notes.push_back(std::move(n));
    }
}

Result<VmRestoreResult> restore_vm(repo::Repository& repo, const virt::Connection& connection,
                                   const VmRestoreOptions& options) {
    VmRestorePlan plan;
    plan.started = std::chrono::steady_clock::now();
    VmRestoreResult result;
    if (auto st = check_options(options); !st) return std::unexpected(st.error());
    if (auto st = read_point(repo, options, plan, result); !st) return std::unexpected(st.error());
    if (auto st = lock_target(connection, options, plan, result); !st)
        return std::unexpected(st.error());
    if (auto st = place_files(options, plan, result); !st) return std::unexpected(st.error());
    if (plan.finished_earlier) return finished_earlier_result(plan, std::move(result));
    for (const auto& p : plan.placements)
        if (auto st = check_vm_target(p, plan.in_place); !st) return std::unexpected(st.error());
    if (options.instant)
        return restore_vm_instant(repo, connection, options, plan, std::move(result));
    return restore_from_files(repo, connection, options, plan, std::move(result));
}

}  // namespace vmshadow::engine
