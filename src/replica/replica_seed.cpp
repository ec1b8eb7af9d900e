// SPDX-License-Identifier: MIT
// Initial replication seeded from a repository's restore point (replica_host.h, "seeding"):
// the point is checked while the announcement waits, then restored on a thread of the host
// with the engine's image restore (qcow2, through qemu-nbd) into seed-<target>.qcow2 files of
// the store's folder, which ReplicaStore::seed makes point 0 with one record replace. The
// primary's first cycle is then a resync: only blocks that differ from the backup are sent.
#include <fstream>
#include <system_error>

#include "common/clock.h"
#include "common/time_format.h"
#include "engine/image_jobs.h"
#include "replica/replica_host_impl.h"
#include "repo/repository.h"

namespace vmshadow::replica {

using Impl = ReplicaHost::Impl;
namespace fs = std::filesystem;

namespace {

fs::path seed_file(const ReplicaStore& store, const std::string& target) {
    return store.folder() / ("seed-" + target + ".qcow2");
}

void remove_seed_files(const ReplicaStore& store) {
    std::error_code ec;
    for (const auto& d : store.identity().disks) {
        fs::remove(seed_file(store, d.target), ec);
        fs::remove(seed_file(store, d.target).string() + ".vmshadow-partial", ec);
    }
}

Result<std::string> read_password(const fs::path& file) {
    std::ifstream in(file);
    std::string password;
    if (!in || !std::getline(in, password))
        return fail(ErrorKind::permission, "cannot read the repository's password-file " +
                                               file.string() + " on this host");
    return password;
}

// The point `seed` names, checked against the store's VM: its name or uuid, and a disk of the
// same size for every replicated disk.
Result<repo::RestorePoint> seed_point(repo::Repository& repository, const routes::SeedSpec& seed,
                                      const StoreIdentity& id) {
    if (auto s = repository.load_index(); !s) return fail(s.error());
    auto listing = repository.list_points();
    if (!listing) return fail(listing.error());
    auto point = repo::Repository::resolve(*listing, seed.point);
    if (!point) return fail(point.error());
    const std::string uuid = point->metadata.is_object() && point->metadata.contains("uuid") &&
                                     point->metadata["uuid"].is_string()
                                 ? point->metadata["uuid"].get<std::string>()
                                 : std::string();
    const std::string what = "restore point " + point->id.short_hex() + " (VM " + point->vm + ")";
    if (point->vm != id.vm_name && uuid != id.vm_uuid)
        return fail(ErrorKind::invalid_argument,
                    what + " is not of VM " + id.vm_name + " (" + id.vm_uuid +
                        "): choose a point of that VM, or enable with --initial network");
    for (const auto& disk : id.disks) {
        const repo::DiskRecord* record = point->disk(disk.target);
        if (!record)
            return fail(ErrorKind::invalid_argument,
                        what + " has no disk " + disk.target +
                            ": it cannot seed the replica (enable with --initial network)");
        if (record->size != disk.size)
            return fail(ErrorKind::invalid_argument,
                        what + ": disk " + disk.target + " is " + std::to_string(record->size) +
                            " bytes there, " + std::to_string(disk.size) +
                            " on the VM now (enable with --initial network)");
    }
    return point;
}

}  // namespace

Status Impl::start_seeding(const std::shared_ptr<VmEntry>& entry, const routes::SeedSpec& seed) {
    ReplicaStore& store = *entry->store;
    const StoreIdentity id = store.identity();
    const std::string what = "seeding the replica of VM " + id.vm_name + " from " +
                             seed.repository + " point " + seed.point;
    repo::OpenOptions open;
    open.password = [this, path = seed.repository]() -> Result<std::string> {
        std::optional<fs::path> file;
        if (options.repository_password_file) file = options.repository_password_file(path);
        if (!file || file->empty())
            return fail(ErrorKind::permission,
                        "repository " + path +
                            " is encrypted: add it to this host's vmshadowd config as a "
                            "[repository.NAME] section with its path and password-file");
        return read_password(*file);
    };
    auto repository = repo::Repository::open(seed.repository, open);
    if (!repository) return fail(repository.error().with_context(what));
    auto point = seed_point(**repository, seed, id);
    if (!point) return fail(point.error().with_context(what));
    remove_seed_files(store);
    if (auto s = store.set_state(std::string(kStateSeeding)); !s) return s;
    entry->last_error.clear();
    entry->seed_point = point->id.short_hex();
    refresh(*entry);
    CancelToken cancel;
    std::lock_guard lock(seeders_mutex);
    seeding[id.vm_uuid] = cancel;
    log(LogLevel::info, "VM " + id.vm_name + ": seeding its replica from restore point " +
                            point->id.short_hex() + " of " + seed.repository);
    seeders.emplace_back(
        [this, entry, id, cancel, point = std::move(*point),
         repository = std::shared_ptr<repo::Repository>(std::move(*repository))](std::stop_token) {
            TaskContext task(nullptr, nullptr, cancel, system_clock());
            std::vector<fs::path> images;
            Status restored;
            for (const auto& disk : id.disks) {
                engine::ImageRestoreOptions o;
                o.point = point.id.hex();
                o.disk = disk.target;
                o.output = (entry->folder / ("seed-" + disk.target + ".qcow2")).string();
                o.format = "qcow2";
                o.task = &task;
                auto done = engine::restore_image(*repository, o);
                if (!done) {
                    restored = fail(done.error());
                    break;
                }
                images.emplace_back(o.output);
            }
            std::lock_guard entry_lock(entry->mutex);
            {
                std::lock_guard lock(seeders_mutex);
                seeding.erase(id.vm_uuid);
            }
            if (entry->removed || !entry->store || entry->store->state() != kStateSeeding) return;
            ReplicaStore& store = *entry->store;
            const std::string token = "seed-" + point.id.hex();
            if (restored) restored = store.seed(images, token, iso8601_utc(point.time));
            if (!restored) {
                remove_seed_files(store);
                entry->last_error = "seeding from restore point " + point.id.short_hex() +
                                    " failed: " + restored.error().message();
                log(LogLevel::error, "VM " + id.vm_name + ": " + entry->last_error +
                                         " (the primary's first cycle sends a full copy)");
            } else {
                log(LogLevel::info, "VM " + id.vm_name + ": replica seeded from restore point " +
                                        point.id.short_hex() +
                                        " (point 0); the first cycle sends " + "only what differs");
            }
            (void)store.set_state(std::string(kStateReplicating));
            refresh(*entry);
        });
    return {};
}

void Impl::cancel_seeding(const std::string& uuid) {
    std::lock_guard lock(seeders_mutex);
    if (auto it = seeding.find(uuid); it != seeding.end()) it->second.request();
}

void Impl::stop_seeding() {
    std::vector<std::jthread> threads;
    {
        std::lock_guard lock(seeders_mutex);
        for (auto& [uuid, cancel] : seeding) cancel.request();
        threads = std::move(seeders);
    }
    threads.clear();  // joins
}

void Impl::settle_cut_off_seeding(ReplicaStore& store) const {
    if (store.state() != kStateSeeding) return;
    remove_seed_files(store);
    (void)store.set_state(std::string(kStateReplicating));
    log(LogLevel::warning, "VM " + store.identity().vm_name +
                               ": seeding its replica was cut off (the daemon stopped); the "
                               "primary's first cycle sends a full copy");
}

}  // namespace vmshadow::replica
