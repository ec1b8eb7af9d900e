// SPDX-License-Identifier: MIT
#include "engine/vm_restore.h"

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "engine/image_jobs.h"
#include "engine/nbd_image.h"
#include "engine/vm_point.h"
#include "export/mount.h"
#include "export/process.h"
#include "repo/lock.h"
#include "repo/restore.h"
#include "virt/block_copy.h"
#include "virt/domain_xml.h"
#include "virt/lifecycle.h"
#include "vmwriter/domain_rewrite.h"
#include "vmwriter/vm_restore_writer.h"
#include "vmwriter/vm_writer.h"
#include "vss/restore_coordinator.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRestoreSuffix = ".vmshadow-restore";

// Files this restore wrote; removed unless the restore got far enough to keep them.
struct WrittenFiles {
    std::vector<fs::path> paths;
    bool keep = false;
    ~WrittenFiles() {
        if (keep) return;
        for (const auto& p : paths) {
            std::error_code ec;
            fs::remove(p, ec);
        }
    }
};

// Writes a VM file of the point to `path` (which must not exist), verified chunk by chunk.
Status write_file_record(const repo::Repository& repo, const repo::FileRecord& f,
                         const fs::path& path) {
    auto bytes = repo::read_file_record(repo, f);
    if (!bytes) return std::unexpected(bytes.error().with_context(f.name));
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes->data()),
              static_cast<std::streamsize>(bytes->size()));
    out.flush();
    if (!out) return fail(ErrorKind::io, "write " + path.string() + " (is the disk full?)");
    return {};
}

bool bridge_exists(const std::string& name) {
    std::error_code ec;
    return !name.empty() && fs::exists(fs::path("/sys/class/net") / name, ec);
}

// Where one disk or file of the point ends up, and where it is written first.
struct Placement {
    std::string name;  // disk target or file role
    fs::path final_path, written;
    const repo::DiskRecord* disk = nullptr;
    const repo::FileRecord* file = nullptr;
};

bool in_place_files_free(const std::vector<Placement>& placements, bool in_place) {
    if (!in_place) return true;
    for (const auto& p : placements) {
        std::error_code ec;
        if (fs::exists(p.final_path, ec)) return false;
    }
    return true;
}

// Instant recovery: the VM runs from the repository's NBD exports (each with a local overlay
// for the guest's writes; an I/O error pauses the guest instead of failing a write) while QEMU
// copies every disk to its final local image, mirroring new writes; once all copies are in
// sync the disks pivot to the local images, the VM becomes persistent and the servers stop.
Result<VmRestoreResult> restore_instant(repo::Repository& repo, const virt::Connection& connection,
                                        const VmRestoreOptions& options,
                                        const repo::RestorePoint& point,
                                        const std::string& stored_xml, const fs::path& folder,
                                        const std::vector<Placement>& placements,
                                        VmRestoreResult result,
                                        std::chrono::steady_clock::time_point started) {
    const std::string label = "restore point " + point.id.short_hex();
    auto plugin = exporter::find_plugin();
    if (!plugin) return std::unexpected(plugin.error());
    fs::path work = (folder.empty() ? placements.front().final_path.parent_path() : folder) /
                    (".vmshadow-instant-" + result.vm);
    // Unix socket paths are limited to 107 bytes: the sockets live in a short private dir.
    fs::path sockets = fs::path("/run/vmshadow/instant") / point.id.hex().substr(0, 12);
    struct Servers {
        std::vector<exporter::ProcessId> processes;
        std::vector<fs::path> dirs;
        ~Servers() {
            for (const auto& p : processes)
                (void)exporter::stop_process(p, std::chrono::seconds(10));
            std::error_code ec;
            for (const auto& d : dirs) fs::remove_all(d, ec);
        }
    } servers;
    servers.dirs = {work, sockets};
    {
        std::error_code sec;
        fs::create_directories(sockets, sec);
        if (sec) return fail(ErrorKind::io, "create " + sockets.string() + ": " + sec.message());
    }
    WrittenFiles written;
    std::error_code ec;
    fs::create_directories(work, ec);
    if (ec) return fail(ErrorKind::io, "create " + work.string() + ": " + ec.message());

    vmwriter::DomainRewriteSpec spec;
    spec.new_name = options.as_name;
    spec.log_dir = folder.string();
    spec.network_exists = [&](const std::string& n) {
        auto e = connection.network_exists(n);
        return e && *e;
    };
    spec.bridge_exists = bridge_exists;
    for (const auto& p : placements) {
        if (p.file) {
            written.paths.push_back(p.final_path);
            if (auto st = write_file_record(repo, *p.file, p.final_path); !st)
                return std::unexpected(st.error());
            spec.boot_files[p.name] = p.final_path.string();
            result.files.push_back({p.name, p.final_path.string(), p.file->size});
            continue;
        }
        std::string base = (work / p.name).string();
        std::string socket = (sockets / (p.name + ".sock")).string();
        exporter::DaemonOptions nbdkit;
        nbdkit.argv = {"nbdkit",
                       "-f",
                       "-U",
                       socket,
                       "-P",
                       base + ".pid",
                       *plugin,
                       "repo=" + repo.root(),
                       "point=" + result.point,
                       "disk=" + p.disk->name,
                       "overlay=" + base + ".overlay"};
        if (!options.password.empty()) nbdkit.env = {"VMSHADOW_PASSWORD=" + options.password};
        nbdkit.log = base + ".log";
        nbdkit.pidfile = base + ".pid";
        auto server = exporter::start_daemon(nbdkit);
        if (!server) return std::unexpected(server.error().with_context("disk " + p.name));
        servers.processes.push_back(*server);
        spec.disks[p.name] = {"", "raw", socket};
        // The local image the copy goes into (pre-created: REUSE_EXTERNAL).
        written.paths.push_back(p.final_path);
        if (auto st = create_image(p.final_path.string(), "qcow2", p.disk->size); !st)
            return std::unexpected(st.error());
        result.disks.push_back({p.name, p.final_path.string(), p.disk->size});
    }
    auto xml = vmwriter::rewrite_domain_xml(stored_xml, spec);
    if (!xml) return std::unexpected(xml.error().with_context(label));
    for (auto& n : xml->notes) result.notes.push_back(std::move(n));
    auto domain = virt::create_transient(connection, xml->xml);
    if (!domain) return std::unexpected(domain.error().with_context(label));
    double running_after =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    result.notes.push_back(
        "running from the repository " +
        std::to_string(static_cast<int>(running_after * 10) / 10.0).substr(0, 4) +
        " s after the command started; copying its disks to local images");
    auto give_up = [&](const Error& e) -> Result<VmRestoreResult> {
        // The VM must not keep running on servers that are about to stop.
        (void)virt::destroy_domain(*domain);
        return std::unexpected(e);
    };
    for (const auto& p : placements) {
        if (!p.disk) continue;
        if (auto st = virt::start_block_copy(*domain, p.name, p.final_path.string(), "qcow2"); !st)
            return give_up(st.error());
    }
    // Wait until every copy is in sync, then pivot each disk to its local image.
    std::map<std::string, bool> pivoted;
    while (true) {
        bool all = true;
        for (const auto& p : placements) {
            if (!p.disk || pivoted[p.name]) continue;
            auto progress = virt::block_job_progress(*domain, p.name);
            if (!progress) return give_up(progress.error());
            if (!progress->running) {
                return give_up(Error(ErrorKind::unavailable,
                                     "disk " + p.name +
                                         ": the copy from the repository stopped "
                                         "before it finished (did its NBD server die? see " +
                                         (work / (p.name + ".log")).string() + ")"));
            }
            if (options.progress) options.progress(p.name, progress->cur, progress->end);
            if (progress->in_sync() && virt::pivot_block_copy(*domain, p.name)) {
                pivoted[p.name] = true;
                continue;
            }
            all = false;
        }
        if (all) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    // Persistent from now on, with the local images (the inactive view of the running VM).
    auto config = domain->xml(virt::XmlFlavor::inactive);
    if (!config) return std::unexpected(config.error());
    auto defined = connection.define(*config);
    if (!defined) return std::unexpected(defined.error().with_context("make the VM persistent"));
    written.keep = true;
    result.started = true;
    result.instant = true;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
}

}  // namespace

Result<VmRestoreResult> restore_vm(repo::Repository& repo, const virt::Connection& connection,
                                   const VmRestoreOptions& options) {
    auto started = std::chrono::steady_clock::now();
    VmRestoreResult result;
    if (options.format != "raw" && options.format != "qcow2")
        return fail(ErrorKind::invalid_argument,
                    "--format must be qcow2 or raw, not " + options.format);
    if (!options.to_dir.empty() && !options.as_name)
        return fail(ErrorKind::invalid_argument,
                    "--to needs --as NAME (an in-place restore "
                    "puts the disks where they were)");
    // Readers hold the shared lock for their whole life: gc must not remove what we read.
    auto opened = open_vm_point(repo, options.point, "restore", "use `vmshadow image restore`");
    if (!opened) return std::unexpected(opened.error());
    const repo::RestorePoint* point = &opened->point;
    const std::string& label = opened->label;
    result.point = point->id.hex();
    result.source_vm = point->vm;
    result.consistency = point->consistency;
    result.vm = options.as_name.value_or(point->vm);
    const bool in_place = !options.as_name;

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

    // 1. Checks before anything is written.
    auto existing = connection.lookup(result.vm);
    if (existing && !options.replace) {
        return fail(ErrorKind::conflict,
                    "a VM named '" + result.vm + "' exists: add --replace to replace it" +
                        (in_place ? ", or restore beside it with --as NEW-NAME" : ""));
    }
    if (!existing && existing.error().kind() != ErrorKind::not_found)
        return std::unexpected(existing.error());
    if (point->disks.empty()) return fail(ErrorKind::corruption, label + " has no disks");

    fs::path folder;
    if (!in_place) {
        std::string first = point->disks.front().info.value("path", "");
        folder = options.to_dir.empty() ? fs::path(first).parent_path() / *options.as_name
                                        : fs::path(options.to_dir);
        std::error_code ec;
        fs::create_directories(folder, ec);
        if (ec) return fail(ErrorKind::io, "create " + folder.string() + ": " + ec.message());
    }
    std::vector<Placement> placements;
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
    const std::pair<const std::string*, const char*> boot[] = {{&desc->boot.nvram, "nvram"},
                                                               {&desc->boot.kernel, "kernel"},
                                                               {&desc->boot.initrd, "initrd"},
                                                               {&desc->boot.dtb, "dtb"}};
    for (const auto& [path, role] : boot) {
        if (path->empty()) continue;
        const repo::FileRecord* f = find_file(*point, role);
        if (!f) {
            result.notes.push_back(std::string(role) + " " + *path +
                                   " is not in the restore point: the VM uses the host's file");
            continue;
        }
        Placement p = place(role, *path);
        p.file = f;
        placements.push_back(std::move(p));
    }
    for (const auto& p : placements) {
        std::error_code ec;
        if (!fs::exists(p.final_path, ec)) continue;
        if (!in_place) {
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
    std::optional<fs::path> memory_file;
    const repo::FileRecord* memory = find_file(*point, "memory");
    if (memory && in_place) {
        memory_file =
            placements.front().final_path.parent_path() / (result.vm + ".vmshadow-memory.save");
    } else if (memory) {
        result.notes.push_back(
            "cold boot: the saved memory image was not used (libvirt refuses to resume a saved "
            "state under another name, UUID or MAC address)");
    }

    if (options.instant) {
        if (existing || !in_place_files_free(placements, in_place)) {
            return fail(ErrorKind::unsupported,
                        "--instant restores a VM that does not exist (yet): restore it --as "
                        "NEW-NAME, or remove '" +
                            result.vm + "' and its files first");
        }
        return restore_instant(repo, connection, options, *point, *stored_xml, folder, placements,
                               std::move(result), started);
    }

    // 2. Write everything beside the old files, then check it is all there.
    WrittenFiles written;
    for (const auto& p : placements) {
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
            if (options.progress) {
                io.progress = [&, name = p.name](std::uint64_t done, std::uint64_t total) {
                    options.progress(name, done, total);
                };
            }
            auto r = restore_image(repo, io);
            if (!r) return std::unexpected(r.error().with_context("disk " + p.name));
            result.disks.push_back({p.name, p.final_path.string(), r->size});
        } else {
            if (auto st = write_file_record(repo, *p.file, p.written); !st)
                return std::unexpected(st.error());
            result.files.push_back({p.name, p.final_path.string(), p.file->size});
        }
    }
    if (memory_file) {
        written.paths.push_back(*memory_file);
        if (auto st = write_file_record(repo, *memory, *memory_file); !st)
            return std::unexpected(st.error());
    }
    std::vector<std::string> missing;
    for (const auto& p : placements) {
        std::error_code ec;
        if (!fs::exists(p.written, ec)) missing.push_back(p.written.string());
    }
    if (!missing.empty()) {
        std::string names;
        for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
        return fail(ErrorKind::io, "restore incomplete, nothing was changed: missing " + names);
    }

    // The XML the VM is defined with.
    vmwriter::DomainRewriteSpec spec;
    for (const auto& p : placements) {
        if (p.disk) spec.disks[p.name] = {p.final_path.string(), options.format};
        if (p.file) spec.boot_files[p.name] = p.final_path.string();
    }
    spec.new_name = options.as_name;
    spec.log_dir = in_place ? std::string() : folder.string();
    spec.network_exists = [&](const std::string& n) {
        auto e = connection.network_exists(n);
        return e && *e;
    };
    spec.bridge_exists = bridge_exists;
    auto rewritten = vmwriter::rewrite_domain_xml(*stored_xml, spec);
    if (!rewritten) return std::unexpected(rewritten.error().with_context(label));
    for (auto& n : rewritten->notes) result.notes.push_back(std::move(n));

    // 3.–5. PreRestore, swap, PostRestore.
    const vss::ComponentEntry* component = nullptr;
    for (const auto& c : document->components)
        if (c.key.logical_path == vmwriter::kVmLogicalPath && c.key.name == point->vm &&
            c.key.writer_id.rfind(vmwriter::kVmWriterId, 0) == 0)
            component = &c;
    if (!component)
        return fail(ErrorKind::corruption, label + ": no VM component in its backup document");
    vmwriter::VmRestoreTarget target;
    target.component = component->key;
    target.name = result.vm;
    target.replace = options.replace;
    target.xml = rewritten->xml;
    if (memory_file) target.memory_file = memory_file->string();
    target.start = options.start;
    auto writer = std::make_shared<vmwriter::VmRestoreWriter>(connection, target);
    vss::RestoreOptions ro;
    ro.vms = {result.vm};
    if (options.state_file) ro.state_file = *options.state_file;
    vss::RestoreCoordinator coordinator({writer}, *document, ro);
    if (auto m = coordinator.gather_writer_metadata(); !m) return std::unexpected(m.error());
    if (auto st = coordinator.select_for_restore(component->key); !st)
        return std::unexpected(st.error());
    if (auto st = coordinator.pre_restore(); !st) {
        (void)coordinator.post_restore();  // status none: puts back anything taken away
        return std::unexpected(st.error());
    }
    result.replaced = writer->outcome().removed_existing;
    if (in_place) {
        for (const auto& p : placements) {
            std::error_code ec;
            fs::rename(p.written, p.final_path, ec);
            if (ec) {
                (void)coordinator.set_file_restore_status(component->key,
                                                          vss::FileRestoreStatus::failed);
                (void)coordinator.post_restore();
                written.keep = true;
                return fail(ErrorKind::io,
                            "restore of '" + result.vm + "' failed after the old VM was " +
                                (result.replaced ? "removed" : "checked") + ": moving " +
                                p.written.string() + " to " + p.final_path.string() + ": " +
                                ec.message() + "; the restored files are beside the old ones (*" +
                                kRestoreSuffix +
                                "): fix the cause and run the restore again "
                                "with --replace");
            }
        }
    }
    written.keep = true;
    if (auto st = coordinator.set_file_restore_status(component->key, vss::FileRestoreStatus::all);
        !st)
        return std::unexpected(st.error());
    auto post = coordinator.post_restore();
    if (memory_file) {
        std::error_code ec;
        fs::remove(*memory_file, ec);
    }
    if (!post) {
        return fail(post.error().kind(),
                    post.error().message() + " (the restored disks are in place at " +
                        placements.front().final_path.parent_path().string() + ")");
    }
    result.resumed = writer->outcome().resumed;
    result.started = writer->outcome().started || result.resumed;
    if (result.replaced)
        result.notes.push_back(
            "the VM's checkpoints were removed with it: its next backup is full");
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
}

}  // namespace vmshadow::engine
