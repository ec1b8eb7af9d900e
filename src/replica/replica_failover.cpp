// SPDX-License-Identifier: MIT
// The replica host's failover operations through libvirt (replica_host.h): test failover and
// its stop, failover and its commit, what reverse replication starts from, and accepting a
// reverse offer (this host was the primary). Every step that fails undoes the ones before it:
// no VM is left defined on overlays the store no longer records, no overlay outlives its VM.
#include <algorithm>
#include <system_error>

#include "common/atomic_file.h"
#include "common/time_format.h"
#include "replica/failover_vm.h"
#include "replica/replica_host_impl.h"
#include "replica/replica_routes.h"
#include "virt/checkpoints.h"
#include "virt/connection.h"
#include "virt/lifecycle.h"

namespace vmshadow::replica {

using nlohmann::json;
using Impl = ReplicaHost::Impl;

namespace {

constexpr const char* kFailoverFile = "failover.json";

// A libvirt lookup that tells "no such VM" (nullopt) from a failure.
Result<std::optional<virt::Domain>> find_domain(const virt::Connection& connection,
                                                const std::string& name_or_uuid) {
    auto found = connection.lookup(name_or_uuid);
    if (found) return std::optional<virt::Domain>(std::move(*found));
    if (found.error().kind() == ErrorKind::not_found) return std::optional<virt::Domain>();
    return fail(found.error());
}

Result<const RecoveryPoint*> choose_point(const ReplicaStore& store,
                                          std::optional<std::uint64_t> seq) {
    const std::string& name = store.identity().vm_name;
    if (seq) {
        if (const RecoveryPoint* p = store.find(*seq)) return p;
        return fail(ErrorKind::not_found, "VM " + name + " has no recovery point " +
                                              std::to_string(*seq) + " (`vmshadow replica points " +
                                              name + "` lists them)");
    }
    if (const RecoveryPoint* p = store.latest()) return p;
    return fail(ErrorKind::conflict,
                "VM " + name + " has no recovery point yet: wait for the initial copy to complete");
}

Status refuse_state(const ReplicaStore& store, std::string_view operation) {
    const std::string& name = store.identity().vm_name;
    const std::string& state = store.state();
    if (state == kStateFailedOver)
        return fail(ErrorKind::conflict, "VM " + name + " is failed over on this host already: " +
                                             std::string(operation) + " refused");
    if (state == kStateReversed)
        return fail(ErrorKind::conflict, "VM " + name + " runs on this host as a primary: " +
                                             std::string(operation) + " refused");
    if (state == kStateFailingOver)
        return fail(ErrorKind::conflict, "a failover of VM " + name +
                                             " was cut off: run `vmshadow replica failover " +
                                             name + "` again to finish it");
    if (state == kStateTest)
        return fail(ErrorKind::conflict,
                    "a test failover of VM " + name + " is running (" + name +
                        "-test): stop it first with `vmshadow replica stop-test " + name + "`");
    return {};
}

std::vector<FailoverDisk> overlay_disks(const ReplicaStore& store,
                                        const std::vector<std::filesystem::path>& overlays) {
    std::vector<FailoverDisk> disks;
    const auto& targets = store.identity().disks;
    for (std::size_t i = 0; i < targets.size() && i < overlays.size(); ++i)
        disks.push_back(FailoverDisk{targets[i].target, overlays[i]});
    return disks;
}

// Undoes a half-made failover VM: stopped, undefined (its checkpoint metadata with it), its
// overlays dropped. Best effort: the first error is what the caller reports.
void undo_vm(ReplicaStore& store, const std::string& kind, const virt::Domain* domain) {
    if (domain) {
        (void)virt::destroy_domain(*domain);
        (void)virt::undefine_domain(*domain);
    }
    (void)store.drop_overlays(kind);
}

// Makes `kind` overlays above point `at` and defines `spec` (its disks filled in) on them;
// nothing is left behind when a step fails.
Result<virt::Domain> define_on_overlays(ReplicaStore& store, const virt::Connection& connection,
                                        const std::string& kind, std::uint64_t at,
                                        FailoverVmSpec spec) {
    auto overlays = store.make_overlays(kind, at);
    if (!overlays) return fail(overlays.error());
    spec.disks = overlay_disks(store, *overlays);
    auto xml = failover_domain_xml(store.identity().domain_xml, spec);
    if (!xml) {
        undo_vm(store, kind, nullptr);
        return fail(xml.error());
    }
    auto domain = connection.define(*xml);
    if (!domain) undo_vm(store, kind, nullptr);
    return domain;
}

TaskContext& context_or(TaskContext* task, std::optional<TaskContext>& fallback) {
    if (task) return *task;
    return fallback.emplace();
}

}  // namespace

Result<FailoverRecord> read_failover_record(const std::filesystem::path& folder) {
    auto text = read_bounded_file(folder / kFailoverFile, 4u << 20);
    if (!text) return fail(text.error());
    try {
        auto j = json::parse(*text);
        return FailoverRecord{
            j.at("seq").get<std::uint64_t>(),      j.at("chain_id").get<std::string>(),
            j.at("checkpoint").get<std::string>(), j.at("checkpoint_xml").get<std::string>(),
            j.at("time").get<std::string>(),       j.value("planned", false)};
    } catch (const json::exception& e) {
        return fail(ErrorKind::corruption, (folder / kFailoverFile).string() +
                                               ": not a failover record (" + e.what() + ")");
    }
}

Status write_failover_record(const std::filesystem::path& folder, const FailoverRecord& r) {
    json j = {{"seq", r.seq},
              {"chain_id", r.chain_id},
              {"checkpoint", r.checkpoint},
              {"checkpoint_xml", r.checkpoint_xml},
              {"time", r.time},
              {"planned", r.planned}};
    return write_file_atomically(folder / kFailoverFile, j.dump(2) + "\n", 0600);
}

// ---- test failover ----

namespace {

Result<json> test_failover_locked(Impl& impl, VmEntry& entry, std::optional<std::uint64_t> seq,
                                  TaskContext& task) {
    ReplicaStore& store = *entry.store;
    const std::string name = store.identity().vm_name;
    const std::string test_name = name + "-test";
    if (auto s = refuse_state(store, "test failover"); !s) return fail(s.error());
    auto point = choose_point(store, seq);
    if (!point) return fail(point.error());
    const std::uint64_t at = (*point)->seq;
    task.phase("prepare");
    auto connection = virt::Connection::open(impl.options.connect_uri);
    if (!connection) return fail(connection.error());
    auto existing = find_domain(*connection, test_name);
    if (!existing) return fail(existing.error());
    if (*existing)
        return fail(ErrorKind::conflict,
                    "a VM named " + test_name +
                        " is already defined on this host: remove or rename it "
                        "before a test failover of " +
                        name);
    auto uuid = random_uuid();
    if (!uuid) return fail(uuid.error());
    // The state first: a daemon killed halfway leaves a test that stop-test removes.
    if (auto s = store.set_state(std::string(kStateTest)); !s) return fail(s.error());
    task.phase("start");
    auto domain = define_on_overlays(store, *connection, "test", at, {test_name, *uuid, {}, true});
    Status done = domain ? virt::start_domain(*domain) : fail(domain.error());
    if (!done) {
        undo_vm(store, "test", domain ? &*domain : nullptr);
        (void)store.set_state(std::string(kStateReplicating));
        impl.refresh(entry);
        return fail(done.error().with_context("test failover of VM " + name));
    }
    impl.refresh(entry);
    impl.log(LogLevel::info, "VM " + name + ": test failover " + test_name +
                                 " started from point " + std::to_string(at) +
                                 " with its network links down");
    return json{{"vm", name}, {"test_vm", test_name}, {"uuid", *uuid}, {"point", at}};
}

Result<json> stop_test_locked(Impl& impl, VmEntry& entry) {
    ReplicaStore& store = *entry.store;
    const std::string name = store.identity().vm_name;
    const std::string test_name = name + "-test";
    if (store.state() != kStateTest)
        return fail(ErrorKind::conflict, "no test failover of VM " + name + " is running");
    auto connection = virt::Connection::open(impl.options.connect_uri);
    if (!connection) return fail(connection.error());
    auto existing = find_domain(*connection, test_name);
    if (!existing) return fail(existing.error());
    if (*existing) {
        // Only the copy on our test overlays is ours to remove.
        auto described = (*existing)->describe();
        if (!described) return fail(described.error());
        for (const auto& disk : described->disks) {
            if (disk.device != "disk") continue;
            if (std::filesystem::path(disk.path).parent_path() != store.folder() ||
                !std::filesystem::path(disk.path).filename().string().starts_with("test-"))
                return fail(ErrorKind::conflict,
                            "VM " + test_name + " has disk " + disk.target + " on " + disk.path +
                                ", not on the test overlays of " + name + "'s replica: left alone");
        }
        if (auto s = virt::destroy_domain(**existing); !s) return fail(s.error());
        if (auto s = virt::undefine_domain(**existing); !s) return fail(s.error());
    }
    if (auto s = store.drop_overlays("test"); !s) return fail(s.error());
    if (auto s = store.set_state(std::string(kStateReplicating)); !s) return fail(s.error());
    impl.refresh(entry);
    impl.log(LogLevel::info,
             "VM " + name + ": test failover " + test_name + " stopped and removed");
    return json{{"vm", name}, {"stopped", test_name}};
}

}  // namespace

// ---- failover ----

namespace {

// A VM of that name or UUID here already: failover would take its place.
Status refuse_taken(const virt::Connection& connection, const StoreIdentity& identity) {
    for (const std::string& key : {identity.vm_name, identity.vm_uuid}) {
        auto existing = find_domain(connection, key);
        if (!existing) return fail(existing.error());
        if (*existing)
            return fail(ErrorKind::conflict, "a VM " + key + " (" + (*existing)->name() +
                                                 ") is already defined on this host: failover of " +
                                                 identity.vm_name + " refused");
    }
    return {};
}

// Started paused until the reverse chain's checkpoint exists, so that every guest write is
// after it (reverse replication sends them), then resumed once the record is written.
Result<FailoverRecord> start_with_reverse_checkpoint(const virt::Domain& domain,
                                                     const ReplicaStore& store, std::uint64_t at,
                                                     bool planned) {
    auto chain_id = random_hex(8);
    if (!chain_id) return fail(chain_id.error());
    const auto now = system_clock().now();
    auto name = virt::make_checkpoint_name(*chain_id, now);
    if (!name) return fail(name.error());
    std::vector<std::string> targets;
    for (const auto& d : store.identity().disks) targets.push_back(d.target);
    if (auto s = virt::start_domain_paused(domain); !s) return fail(s.error());
    auto xml = virt::create_checkpoint(domain, *name, targets);
    if (!xml) return fail(xml.error());
    FailoverRecord record{at, *chain_id, *name, *xml, iso8601_utc(unix_seconds(now)), planned};
    if (auto s = write_failover_record(store.folder(), record); !s) return fail(s.error());
    if (auto s = virt::resume_domain(domain); !s) return fail(s.error());
    return record;
}

// The VM `identity` names, when it runs on this store's live overlays (ours to finish or undo).
Result<std::optional<virt::Domain>> our_live_vm(const virt::Connection& connection,
                                                const ReplicaStore& store) {
    auto found = find_domain(connection, store.identity().vm_uuid);
    if (!found || !*found) return found;
    auto described = (*found)->describe();
    if (!described) return fail(described.error());
    for (const auto& disk : described->disks) {
        std::filesystem::path path(disk.path);
        if (disk.device == "disk" && (path.parent_path() != store.folder() ||
                                      !path.filename().string().starts_with("live-")))
            return fail(ErrorKind::conflict,
                        (*found)->label() + " has disk " + disk.target + " on " + disk.path +
                            ", not on the replica's live overlays: left alone");
    }
    return found;
}

// A failover cut off halfway (state failing-over): finished when the VM got as far as its
// reverse checkpoint (the record exists: only the resume and the state were missing), else
// undone so that it starts again. True when finished.
Result<bool> settle_cut_off_failover(const virt::Connection& connection, ReplicaStore& store) {
    auto vm = our_live_vm(connection, store);
    if (!vm) return fail(vm.error());
    bool finish = *vm && read_failover_record(store.folder()).has_value();
    if (finish) {
        auto state = (*vm)->state();
        if (state && *state == virt::DomainState::paused) {
            if (auto s = virt::resume_domain(**vm); !s) return fail(s.error());
        } else if (!state || *state != virt::DomainState::running) {
            finish = false;
        }
    }
    if (finish) {
        if (auto s = store.set_state(std::string(kStateFailedOver)); !s) return fail(s.error());
        return true;
    }
    undo_vm(store, "live", *vm ? &**vm : nullptr);
    std::error_code ec;
    std::filesystem::remove(store.folder() / kFailoverFile, ec);
    if (auto s = store.set_state(std::string(kStateReplicating)); !s) return fail(s.error());
    return false;
}

}  // namespace

Result<json> Impl::failover_locked(VmEntry& entry, std::optional<std::uint64_t> seq,
                                   TaskContext* given_task, bool planned) {
    std::optional<TaskContext> fallback;
    TaskContext& task = context_or(given_task, fallback);
    ReplicaStore& store = *entry.store;
    const StoreIdentity identity = store.identity();
    const std::string& name = identity.vm_name;
    const std::string what = "failover of VM " + name;
    task.phase("prepare");
    auto connection = virt::Connection::open(options.connect_uri);
    if (!connection) return fail(connection.error());
    if (store.state() == kStateFailingOver) {
        auto finished = settle_cut_off_failover(*connection, store);
        refresh(entry);
        if (!finished) return fail(finished.error().with_context(what + " (cut off before)"));
        if (*finished) {
            auto record = read_failover_record(store.folder());
            if (!record) return fail(record.error());
            log(LogLevel::info, "VM " + name + ": a failover cut off halfway was finished");
            return json{{"vm", name},
                        {"uuid", identity.vm_uuid},
                        {"point", record->seq},
                        {"checkpoint", record->checkpoint}};
        }
    }
    if (auto s = refuse_state(store, "failover"); !s) return fail(s.error());
    auto point = choose_point(store, seq);
    if (!point) return fail(point.error());
    const std::uint64_t at = (*point)->seq;
    if (auto s = refuse_taken(*connection, identity); !s) return fail(s.error());
    abort_cycle(entry, "the VM fails over");
    // The state first: a daemon killed halfway leaves a failover the next one settles.
    if (auto s = store.set_state(std::string(kStateFailingOver)); !s) return fail(s.error());
    task.phase("start");
    auto domain =
        define_on_overlays(store, *connection, "live", at, {name, identity.vm_uuid, {}, false});
    auto record = domain ? start_with_reverse_checkpoint(*domain, store, at, planned)
                         : Result<FailoverRecord>(std::unexpected(domain.error()));
    Status done = record ? store.set_state(std::string(kStateFailedOver)) : fail(record.error());
    if (!done) {
        undo_vm(store, "live", domain ? &*domain : nullptr);
        std::error_code ec;
        std::filesystem::remove(store.folder() / kFailoverFile, ec);
        (void)store.set_state(std::string(kStateReplicating));
        refresh(entry);
        return fail(done.error().with_context(what));
    }
    refresh(entry);
    log(LogLevel::info, "VM " + name + (planned ? " failed over (planned)" : " failed over") +
                            ": running here from point " + std::to_string(at) + ", reverse chain " +
                            record->chain_id);
    return json{{"vm", name},
                {"uuid", identity.vm_uuid},
                {"point", at},
                {"checkpoint", record->checkpoint},
                {"planned", planned}};
}

Result<json> Impl::remove_locked(VmEntry& entry) {
    ReplicaStore& store = *entry.store;
    const std::string name = store.identity().vm_name;
    const std::string uuid = store.identity().vm_uuid;
    if (auto s = refuse_state(store, "removing the replica"); !s) return fail(s.error());
    abort_cycle(entry, "the replica is removed");
    cancel_seeding(uuid);
    const std::filesystem::path folder = store.folder();
    entry.store.reset();
    entry.removed = true;
    erase(uuid);
    std::error_code ec;
    std::filesystem::remove_all(folder, ec);
    if (ec)
        return fail(ErrorKind::io, "replica of VM " + name + " removed, but " + folder.string() +
                                       " could not be deleted: " + ec.message());
    log(LogLevel::info, "VM " + name + ": replica removed (" + folder.string() + ")");
    return json{{"vm", name}, {"removed", true}};
}

// ---- reverse acceptance ----

namespace {

struct LocalVm {
    std::string name, inactive_xml;
    std::vector<std::filesystem::path> images;
};

// This host's VM `uuid`, shut off, with the offered disks at the offered sizes.
Result<LocalVm> reversible_vm(const virt::Connection& connection,
                              const routes::ReverseOffer& offer) {
    const std::string& uuid = offer.vm.uuid;
    auto found = find_domain(connection, uuid);
    if (!found) return fail(found.error());
    if (!*found)
        return fail(ErrorKind::not_found,
                    "VM " + offer.vm.name + " (" + uuid +
                        ") is not defined on this host: there is nothing to reverse");
    const virt::Domain& domain = **found;
    auto state = domain.state();
    if (!state) return fail(state.error());
    if (*state != virt::DomainState::shutoff)
        return fail(ErrorKind::conflict,
                    domain.label() + " is " + std::string(virt::state_name(*state)) +
                        " on this host: it must be shut off to become a replica "
                        "(a planned failover shuts it down)");
    auto described = domain.describe();
    if (!described) return fail(described.error());
    auto xml = domain.xml(virt::XmlFlavor::inactive);
    if (!xml) return fail(xml.error());
    LocalVm vm{domain.name(), *xml, {}};
    for (const auto& disk : offer.vm.disks) {
        auto spec = std::ranges::find_if(
            described->disks, [&](const virt::DiskSpec& d) { return d.target == disk.target; });
        if (spec == described->disks.end() || spec->path.empty() ||
            (spec->source_type != "file" && spec->source_type != "block"))
            return fail(ErrorKind::conflict, domain.label() + " has no file or block disk " +
                                                 disk.target +
                                                 " here, which the reverse offer names");
        auto info = domain.block_info(disk.target);
        if (!info) return fail(info.error());
        if (info->capacity != disk.size)
            return fail(ErrorKind::conflict, domain.label() + ": disk " + disk.target + " is " +
                                                 std::to_string(info->capacity) +
                                                 " bytes here, the offer says " +
                                                 std::to_string(disk.size));
        vm.images.emplace_back(spec->path);
    }
    return vm;
}

}  // namespace

net::HttpResponse Impl::accept_reverse(const std::string& uuid, const std::string& subject,
                                       const json& body) {
    using routes::error_response;
    auto offer = routes::parse_reverse(body);
    if (!offer) return error_response(offer.error());
    if (offer->vm.uuid != uuid)
        return error_response(
            400, "reverse offer: uuid " + offer->vm.uuid + " differs from the path's " + uuid);
    auto allow = allowed(subject);
    if (!allow) return error_response(403, "certificate subject is not allowed");
    auto connection = virt::Connection::open(options.connect_uri);
    if (!connection) return error_response(connection.error());
    auto entry = std::make_shared<VmEntry>();
    std::unique_lock entry_lock(entry->mutex);
    {
        std::lock_guard lock(mutex);
        if (vms.contains(uuid))
            return error_response(409, "this host already holds a replica of VM " + offer->vm.name +
                                           " (" + uuid +
                                           "): remove it before reversing onto this host");
        entry->folder = new_folder(allow->storage, offer->vm.name, uuid);
        vms.emplace(uuid, entry);
    }
    auto give_up = [&](const Error& error) {
        entry->removed = true;
        if (entry->store) {
            entry->store.reset();
            std::error_code ec;
            std::filesystem::remove_all(entry->folder, ec);
        }
        erase(uuid);
        log(LogLevel::warning,
            "reverse offer for VM " + offer->vm.name + " refused: " + error.message());
        return error_response(error);
    };
    auto vm = reversible_vm(*connection, *offer);
    if (!vm) return give_up(vm.error());
    StoreIdentity identity{vm->name,         uuid,
                           subject,          offer->vm.primary_endpoint,
                           vm->inactive_xml, offer->vm.disks,
                           offer->vm.history};
    auto store =
        ReplicaStore::adopt(entry->folder, identity, vm->images, offer->token, offer->time);
    if (!store) return give_up(store.error().with_context("reverse of VM " + vm->name));
    entry->store = std::move(*store);
    // Our primary link goes first (it deletes its checkpoint chain from the still defined VM),
    // then the definition: a replica's VM started by accident would write into the base.
    if (options.release_primary)
        if (auto s = options.release_primary(uuid); !s && s.error().kind() != ErrorKind::not_found)
            return give_up(
                s.error().with_context("reverse of VM " + vm->name + ": release the primary link"));
    auto domain = connection->lookup(uuid);
    if (!domain) return give_up(domain.error());
    if (auto s = virt::undefine_domain(*domain); !s) return give_up(s.error());
    if (auto s = entry->store->set_state(std::string(kStateReplicating)); !s)
        return give_up(s.error());
    refresh(*entry);
    log(LogLevel::info, "VM " + vm->name + " reversed: this host is now its replica (from '" +
                            subject + "'), its disks are point 0 in " + entry->folder.string());
    return routes::json_response(200, routes::state_json(*entry->store));
}

// ---- the public operations ----

namespace {

// Runs `op` on the VM's entry under its mutex.
template <typename Op>
auto with_entry(const Impl& impl, const std::string& vm, Op op)
    -> decltype(op(std::declval<VmEntry&>())) {
    auto entry = impl.find_vm(vm);
    if (!entry) return fail(entry.error());
    std::lock_guard lock((*entry)->mutex);
    if ((*entry)->removed || !(*entry)->store)
        return fail(ErrorKind::not_found, "no replica of VM " + vm + " on this host");
    return op(**entry);
}

}  // namespace

Result<json> ReplicaHost::test_failover(const std::string& vm, std::optional<std::uint64_t> seq,
                                        TaskContext* task) {
    return with_entry(*impl_, vm, [&](VmEntry& entry) {
        std::optional<TaskContext> fallback;
        return test_failover_locked(*impl_, entry, seq, context_or(task, fallback));
    });
}

Result<json> ReplicaHost::stop_test(const std::string& vm) {
    return with_entry(*impl_, vm, [&](VmEntry& entry) { return stop_test_locked(*impl_, entry); });
}

Result<json> ReplicaHost::failover(const std::string& vm, std::optional<std::uint64_t> seq,
                                   TaskContext* task) {
    return with_entry(*impl_, vm, [&](VmEntry& entry) {
        return impl_->failover_locked(entry, seq, task, false);
    });
}

Result<json> ReplicaHost::commit(const std::string& vm) {
    return with_entry(*impl_, vm, [&](VmEntry& entry) -> Result<json> {
        ReplicaStore& store = *entry.store;
        const std::string& name = store.identity().vm_name;
        if (store.state() != kStateFailedOver)
            return fail(ErrorKind::conflict,
                        "VM " + name + " is not failed over on this host: nothing to commit");
        auto record = read_failover_record(store.folder());
        if (!record) return fail(record.error());
        if (auto s = store.commit_failover(record->seq); !s) return fail(s.error());
        impl_->refresh(entry);
        impl_->log(LogLevel::info, "VM " + name + ": failover to point " +
                                       std::to_string(record->seq) +
                                       " committed; the other points are gone");
        return json{{"vm", name}, {"point", record->seq}, {"committed", true}};
    });
}

Result<ReverseSource> ReplicaHost::reverse_source(const std::string& vm) const {
    return with_entry(*impl_, vm, [&](VmEntry& entry) -> Result<ReverseSource> {
        const ReplicaStore& store = *entry.store;
        const StoreIdentity& id = store.identity();
        if (store.state() != kStateFailedOver)
            return fail(ErrorKind::conflict,
                        "VM " + id.vm_name +
                            " is not failed over on this host: reverse replication "
                            "starts after a failover");
        auto record = read_failover_record(store.folder());
        if (!record) return fail(record.error());
        auto connection = virt::Connection::open(impl_->options.connect_uri);
        if (!connection) return fail(connection.error());
        auto domain = connection->lookup(id.vm_uuid);
        if (!domain) return fail(domain.error());
        auto xml = domain->xml(virt::XmlFlavor::inactive);
        if (!xml) return fail(xml.error());
        // libvirt's copy of the checkpoint is the truth; it must still exist to be a base.
        auto cp_xml = virt::checkpoint_xml(*domain, record->checkpoint);
        if (!cp_xml)
            return fail(cp_xml.error().with_context("reverse replication of VM " + id.vm_name));
        ReverseSource source;
        source.vm = id.vm_name;
        source.uuid = id.vm_uuid;
        source.domain_xml = *xml;
        for (const auto& d : id.disks) source.disks.emplace_back(d.target, d.size);
        source.peer_endpoint = id.primary_endpoint;
        source.chain_id = record->chain_id;
        source.checkpoint_xml = *cp_xml;
        source.token = record->checkpoint;
        source.time = record->time;
        source.history = id.history;
        source.planned = record->planned;
        return source;
    });
}

Status ReplicaHost::mark_reversed(const std::string& vm) {
    return with_entry(*impl_, vm, [&](VmEntry& entry) -> Status {
        ReplicaStore& store = *entry.store;
        if (store.state() != kStateFailedOver)
            return fail(ErrorKind::conflict,
                        "VM " + store.identity().vm_name + " is not failed over on this host");
        if (auto s = store.set_state(std::string(kStateReversed)); !s) return s;
        const std::string uuid = store.identity().vm_uuid;
        entry.removed = true;
        std::lock_guard lock(impl_->mutex);
        impl_->vms.erase(uuid);
        impl_->retired.push_back(std::move(entry.store));
        return {};
    });
}

Result<json> ReplicaHost::remove(const std::string& vm) {
    return with_entry(*impl_, vm, [&](VmEntry& entry) { return impl_->remove_locked(entry); });
}

}  // namespace vmshadow::replica
