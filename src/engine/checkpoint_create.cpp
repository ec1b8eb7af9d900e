// SPDX-License-Identifier: MIT
// create_checkpoint (checkpoint_ops.h): the VM's current images become a checkpoint's layers
// and the VM goes on writing to fresh overlays above them.
#include <algorithm>
#include <ctime>
#include <filesystem>

#include "common/time_format.h"
#include "engine/checkpoint_ops.h"
#include "engine/checkpoint_session.h"
#include "virt/freeze_guard.h"
#include "virt/snapshot.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

// Hyper-V's default name: "<VM> - (<local date and time>)", made unique within the tree.
std::string default_name(const CheckpointTree& tree, std::int64_t now) {
    std::time_t t = static_cast<std::time_t>(now);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char when[64];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    // Room for the time and a " (n)" within the 100 characters a name may have.
    std::size_t cut = std::min<std::size_t>(tree.vm_name.size(), 70);
    // Not inside a UTF-8 sequence: back up over continuation bytes (10xxxxxx).
    while (cut > 0 && cut < tree.vm_name.size() &&
           (static_cast<unsigned char>(tree.vm_name[cut]) & 0xC0) == 0x80)
        --cut;
    std::string base = tree.vm_name.substr(0, cut) + " - (" + when + ")";
    std::string name = base;
    for (int n = 2; !check_new_checkpoint_name(tree, name); ++n)
        name = base + " (" + std::to_string(n) + ")";
    return name;
}

void remove_files(const std::vector<CheckpointDisk>& disks) {
    for (const auto& d : disks) {
        std::error_code ec;
        fs::remove(d.image, ec);
    }
}

// A shut-off VM: its disks are consistent already; overlays with qemu-img, domain redefined.
Status checkpoint_off_vm(virt::Connection& connection, CheckpointSession& s,
                         const std::vector<CheckpointDisk>& overlays) {
    for (std::size_t i = 0; i < overlays.size(); ++i) {
        if (auto st = virt::create_overlay(overlays[i].image, s.tree.active[i].image); !st) {
            remove_files(overlays);
            return st;
        }
    }
    auto xml = s.domain.xml(virt::XmlFlavor::inactive);
    auto moved =
        xml ? domain_xml_on_images(*xml, overlays) : Result<std::string>(fail(xml.error()));
    auto defined = moved ? connection.define(*moved) : Result<virt::Domain>(fail(moved.error()));
    if (!defined) {
        remove_files(overlays);
        return fail(defined.error().with_context(s.domain.label() + ": put its disks on overlays"));
    }
    return {};
}

// Freezes through the agent, snapshots the disks, thaws. `freeze_failed`: the error is the
// agent's (a standard checkpoint may stand in), not the snapshot's.
Status production_snapshot(virt::Connection& connection, CheckpointSession& s,
                           const std::vector<virt::SnapshotOverlay>& overlays, int timeout_seconds,
                           std::string& consistency, bool& freeze_failed) {
    freeze_failed = true;
    if (s.state != virt::DomainState::running)
        return fail(ErrorKind::conflict,
                    s.domain.label() + " is paused: its guest agent cannot freeze it");
    virt::FreezeSettings settings;
    settings.connect_uri = connection.uri();
    settings.freeze_timeout = std::chrono::seconds(timeout_seconds);
    auto guard = virt::FreezeGuard::freeze(s.domain, settings);
    if (!guard) return fail(guard.error());
    freeze_failed = false;
    if (auto st = virt::take_external_snapshot(s.domain, overlays, std::nullopt); !st) return st;
    auto thawed = guard->thaw();
    consistency = "application";
    // The disks switched already: the checkpoint exists, but the guest thawed before it.
    if (!thawed || thawed->window_broken())
        consistency = "crash (the guest was thawed before the snapshot completed)";
    return {};
}

std::string production_refusal(const CheckpointSession& s, const Error& why) {
    return "production checkpoint of vm '" + s.domain.name() +
           "' needs its guest agent to freeze the filesystems, and it could not (" + why.message() +
           "): start the guest agent, or make a standard checkpoint (--type standard, or "
           "--fallback-standard to do so when this happens)";
}

}  // namespace

Result<Checkpoint> create_checkpoint(virt::Connection& connection,
                                     const CheckpointCreateOptions& options, TaskContext& task) {
    auto session = open_checkpoint_session(connection, options.vm, "checkpoint create");
    if (!session) return fail(session.error());
    CheckpointSession& s = *session;
    if (auto st = refuse_if_shadowed(s.domain, "checkpoint create"); !st) return fail(st.error());
    const std::int64_t now = unix_seconds(task.clock().now());

    Checkpoint c;
    c.id = new_checkpoint_id(s.tree);
    if (options.name.empty()) {
        c.name = default_name(s.tree, now);
    } else if (auto st = check_new_checkpoint_name(s.tree, options.name); !st) {
        return fail(st.error());
    } else {
        c.name = options.name;
    }
    c.type = options.type;
    c.created = now;
    c.parent = s.tree.current;
    c.disks = s.tree.active;
    auto inactive = s.domain.xml(virt::XmlFlavor::inactive);
    if (!inactive) return fail(inactive.error());
    c.domain_xml = *inactive;

    fs::path folder = checkpoint_folder(s.domain.uuid());
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec)
        return fail(ErrorKind::io,
                    "create the checkpoint folder " + folder.string() + ": " + ec.message());

    std::vector<CheckpointDisk> overlays;
    std::vector<virt::SnapshotOverlay> snapshot;
    for (const auto& d : s.tree.active) {
        overlays.push_back({d.target, new_overlay_path(d.image)});
        snapshot.push_back({d.target, overlays.back().image});
    }

    if (!s.active()) {
        task.phase("checkpoint (VM off)");
        if (auto st = checkpoint_off_vm(connection, s, overlays); !st) return fail(st.error());
        c.type = CheckpointType::production;
        c.consistency = "shut off";
        if (options.type == CheckpointType::standard)
            c.note =
                "the VM was off: there was no memory to save, so this checkpoint holds "
                "its disks only";
    } else {
        if (c.type == CheckpointType::production) {
            task.phase("checkpoint (production: freeze, snapshot, thaw)");
            bool freeze_failed = false;
            auto made = production_snapshot(connection, s, snapshot, options.freeze_timeout_seconds,
                                            c.consistency, freeze_failed);
            if (!made && !freeze_failed) return fail(made.error());
            if (!made && !options.fallback_standard)
                return fail(made.error().kind(), production_refusal(s, made.error()));
            if (!made) {
                c.type = CheckpointType::standard;
                c.note =
                    "a standard checkpoint instead of a production one: " + made.error().message();
                task.warn(c.note);
            }
        }
        if (c.type == CheckpointType::standard) {
            task.phase("checkpoint (standard: memory and disks)");
            fs::path memory = folder / (c.id + ".mem");
            if (auto st = virt::take_external_snapshot(s.domain, snapshot, memory); !st)
                return fail(st.error());
            c.memory_file = memory.string();
            c.consistency = "running-state";
        }
    }

    if (c.consistency == "shut off") {
        // qemu-img's overlay carries none of the dirty bitmaps a live snapshot would.
        s.tree.tracking_reset_at = now;
        s.tree.tracking_reset_reason = "checkpoint '" + c.name + "' was made at " +
                                       iso8601_utc(now) +
                                       " while the VM was off (its overlay has no change tracking)";
    }
    s.tree.checkpoints.push_back(c);
    s.tree.current = c.id;
    s.tree.active = overlays;
    if (auto st = save_checkpoint_tree(s.tree); !st)
        return fail(st.error().with_context(s.domain.label() + " runs on its new overlays (" +
                                            overlays.front().image + "…) but checkpoint '" +
                                            c.name + "' could not be recorded"));
    task.info("checkpoint '" + c.name + "' (" + c.id + ") of vm '" + s.domain.name() +
              "': " + c.consistency);
    return c;
}

}  // namespace vmshadow::engine
