// SPDX-License-Identifier: MIT
// ReplicaHost: the stores under the allow list's folders and the replica protocol's routes
// (replica_protocol.h). Failover operations are in replica_failover.cpp, offline import in
// replica_import.cpp.
#include "replica/replica_host.h"

#include <unistd.h>

#include <algorithm>
#include <system_error>

#include "common/test_hook.h"
#include "common/time_format.h"
#include "replica/replica_host_impl.h"
#include "replica/replica_protocol.h"
#include "replica/replica_routes.h"

namespace vmshadow::replica {

using nlohmann::json;
using routes::error_response;
using routes::json_response;

namespace {

std::string printable(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, 200))
        out += (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) ? c : '?';
    return out;
}

struct Locked {
    std::shared_ptr<VmEntry> entry;
    std::unique_lock<std::mutex> lock;
};

// The VM's entry, locked, when `subject` owns it; otherwise the response refusing.
std::expected<Locked, net::HttpResponse> lock_owned(ReplicaHost::Impl& impl,
                                                    const std::string& uuid,
                                                    const std::string& subject) {
    auto entry = impl.find_uuid(uuid);
    if (!entry)
        return std::unexpected(error_response(404, "no replica of VM " + uuid + " on this host"));
    std::unique_lock lock(entry->mutex);
    if (entry->removed || !entry->store)
        return std::unexpected(error_response(
            409, "the replica of VM " + uuid + " is being created or removed; try again"));
    if (entry->subject() != subject)
        return std::unexpected(error_response(
            409, "the replica of VM " + entry->name() + " (" + uuid + ") belongs to primary '" +
                     printable(entry->subject()) + "', not to '" + printable(subject) + "'"));
    return Locked{std::move(entry), std::move(lock)};
}

// Cycles, hashes and announcements are refused once the VM runs here.
std::optional<net::HttpResponse> refuse_when_failed_over(const VmEntry& entry,
                                                         std::string_view what) {
    const std::string& state = entry.store->state();
    if (state == kStateFailedOver || state == kStateFailingOver)
        return error_response(409, "VM " + entry.name() +
                                       " is failed over on this host: " + std::string(what) +
                                       " refused (reverse replication sends changes back)");
    if (state == kStateReversed)
        return error_response(409, "VM " + entry.name() + " runs on this host as a primary now: " +
                                       std::string(what) + " refused");
    return std::nullopt;
}

// While a seed is restored, the store has no point to apply a cycle to or to hash.
std::optional<net::HttpResponse> refuse_while_seeding(const VmEntry& entry) {
    if (entry.store->state() != kStateSeeding) return std::nullopt;
    return error_response(409, "VM " + entry.name() + ": seeding from restore point " +
                                   entry.seed_point + ": retry later");
}

StoreIdentity identity_of(const routes::Announcement& a, const std::string& subject) {
    return StoreIdentity{a.name,       a.uuid,  subject,  a.primary_endpoint,
                         a.domain_xml, a.disks, a.history};
}

bool same_identity(const StoreIdentity& a, const StoreIdentity& b) {
    return a.vm_name == b.vm_name && a.vm_uuid == b.vm_uuid &&
           a.primary_subject == b.primary_subject && a.primary_endpoint == b.primary_endpoint &&
           a.domain_xml == b.domain_xml && routes::same_disks(a.disks, b.disks);
}

net::HttpResponse hello(const ReplicaHost::Impl& impl, const std::string& subject) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    return json_response(200, {{"version", kProtocolVersion},
                               {"host", host},
                               {"subject", impl.options.own_subject},
                               {"peer", subject}});
}

}  // namespace

// ---- Impl: stores and entries ----

void ReplicaHost::Impl::log(LogLevel level, const std::string& line) const {
    if (options.log) options.log(level, line);
}

std::optional<AllowEntry> ReplicaHost::Impl::allowed(const std::string& subject) const {
    std::lock_guard lock(mutex);
    for (const auto& a : options.allow)
        if (a.subject == subject) return a;
    return std::nullopt;
}

std::shared_ptr<VmEntry> ReplicaHost::Impl::find_uuid(const std::string& uuid) const {
    std::lock_guard lock(mutex);
    auto it = vms.find(uuid);
    return it == vms.end() ? nullptr : it->second;
}

Result<std::shared_ptr<VmEntry>> ReplicaHost::Impl::find_vm(const std::string& vm) const {
    if (routes::is_uuid(vm)) {
        if (auto entry = find_uuid(vm)) return entry;
        return fail(ErrorKind::not_found, "no replica of VM " + vm + " on this host");
    }
    std::vector<std::shared_ptr<VmEntry>> entries;
    {
        std::lock_guard lock(mutex);
        for (const auto& [uuid, entry] : vms) entries.push_back(entry);
    }
    std::shared_ptr<VmEntry> found;
    for (const auto& entry : entries) {
        auto summary = entry->read_summary();
        if (summary.state.is_null() || summary.state.value("name", "") != vm) continue;
        if (found)
            return fail(ErrorKind::conflict,
                        "two replicas on this host are named " + vm + ": name the VM by its UUID");
        found = entry;
    }
    if (!found)
        return fail(
            ErrorKind::not_found,
            "no replica of VM " + vm + " on this host (`vmshadow replica status` lists them)");
    return found;
}

std::filesystem::path ReplicaHost::Impl::new_folder(const std::filesystem::path& storage,
                                                    const std::string& name,
                                                    const std::string& uuid) const {
    std::string base = name + "-" + uuid.substr(0, 8);
    std::filesystem::path folder = storage / base;
    std::error_code ec;
    for (int n = 2; std::filesystem::exists(folder, ec) && n < 1000; ++n)
        folder = storage / (base + "-" + std::to_string(n));
    return folder;
}

void ReplicaHost::Impl::erase(const std::string& uuid) {
    std::lock_guard lock(mutex);
    vms.erase(uuid);
}

void ReplicaHost::Impl::adopt_store(std::unique_ptr<ReplicaStore> store) {
    const std::string uuid = store->identity().vm_uuid;
    settle_cut_off_seeding(*store);
    std::lock_guard lock(mutex);
    if (store->state() == kStateReversed) {
        retired.push_back(std::move(store));
        return;
    }
    if (vms.contains(uuid)) {
        log(LogLevel::warning, "replica store " + store->folder().string() + " holds VM " + uuid +
                                   " again; it is ignored (remove the folder you do not want)");
        return;
    }
    auto entry = std::make_shared<VmEntry>();
    entry->folder = store->folder();
    entry->store = std::move(store);
    refresh(*entry);
    vms.emplace(uuid, std::move(entry));
}

void ReplicaHost::Impl::scan(const AllowEntry& allow) {
    std::error_code ec;
    if (!std::filesystem::is_directory(allow.storage, ec)) return;
    std::vector<std::filesystem::path> open_folders;
    {
        std::lock_guard lock(mutex);
        for (const auto& [uuid, entry] : vms) open_folders.push_back(entry->folder);
        for (const auto& store : retired) open_folders.push_back(store->folder());
    }
    for (const auto& item : std::filesystem::directory_iterator(allow.storage, ec)) {
        const auto& folder = item.path();
        if (!item.is_directory(ec) || !std::filesystem::exists(folder / "replica.json", ec))
            continue;
        if (std::ranges::find(open_folders, folder) != open_folders.end()) continue;
        auto store = ReplicaStore::open(folder);
        if (!store) {
            log(LogLevel::warning,
                "replica store " + folder.string() + " not opened: " + store.error().message());
            continue;
        }
        adopt_store(std::move(*store));
    }
}

void ReplicaHost::Impl::refresh(VmEntry& entry) const {
    std::lock_guard lock(entry.summary_mutex);
    if (!entry.store) return;
    entry.summary.state = routes::state_json(*entry.store);
    entry.summary.subject = entry.subject();
    entry.summary.history = entry.history;
    entry.summary.last_error = entry.last_error;
}

void ReplicaHost::Impl::note_cycle(VmEntry& entry, bool ok, const std::string& error) {
    if (!entry.cycle) return;
    const auto& c = *entry.cycle;
    CycleRecord record;
    record.started = c.started;
    record.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - c.started_steady).count();
    record.bytes_sent = c.bytes;
    record.result = ok ? CycleRecord::Result::ok : CycleRecord::Result::failed;
    if (ok && entry.store && entry.store->latest())
        if (auto t = parse_iso8601_utc(entry.store->latest()->time))
            record.point_time = Clock::time_point(std::chrono::seconds(*t));
    entry.history.push_back(record);
    trim_history(entry.history, system_clock().now());
    entry.last_error = ok ? std::string() : error;
}

void ReplicaHost::Impl::abort_cycle(VmEntry& entry, const std::string& why) {
    if (!entry.cycle) return;
    log(LogLevel::info, "VM " + entry.name() + ": cycle " + entry.cycle->id + " aborted: " + why);
    entry.cycle->cycle->abort();
    note_cycle(entry, false, "cycle " + entry.cycle->id + " aborted: " + why);
    entry.cycle.reset();
    refresh(entry);
}

void ReplicaHost::Impl::sweep_stale_cycles() {
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<VmEntry>> entries;
    {
        std::lock_guard lock(mutex);
        if (now - last_sweep < std::chrono::minutes(1)) return;
        last_sweep = now;
        for (const auto& [uuid, entry] : vms) entries.push_back(entry);
    }
    for (const auto& entry : entries) {
        std::unique_lock lock(entry->mutex, std::try_to_lock);
        if (!lock || entry->removed || !entry->store || !entry->cycle) continue;
        if (now - entry->cycle->last_request >= kStaleCycle)
            abort_cycle(*entry, "no request for " + std::to_string(kStaleCycle.count()) +
                                    " minutes (the primary is gone)");
    }
}

// ---- the protocol ----

namespace {

using Impl = ReplicaHost::Impl;

// An announcement with a seed, for a store without a point: the restore starts (the
// announcement's answer is its check's error, if any). A store seeding already answers as is.
Status maybe_seed(Impl& impl, const std::shared_ptr<VmEntry>& entry,
                  const routes::Announcement& a) {
    const ReplicaStore& store = *entry->store;
    if (!a.seed || !store.points().empty() || store.state() == kStateSeeding) return {};
    return impl.start_seeding(entry, *a.seed);
}

net::HttpResponse create_store(Impl& impl, const routes::Announcement& a,
                               const std::string& subject) {
    auto allow = impl.allowed(subject);
    if (!allow)
        return error_response(403,
                              "certificate subject '" + printable(subject) + "' is not allowed");
    auto entry = std::make_shared<VmEntry>();
    std::unique_lock entry_lock(entry->mutex);
    {
        std::lock_guard lock(impl.mutex);
        if (impl.vms.contains(a.uuid))
            return error_response(409, "VM " + a.uuid + " was announced twice at once; try again");
        entry->folder = impl.new_folder(allow->storage, a.name, a.uuid);
        impl.vms.emplace(a.uuid, entry);
    }
    auto store = ReplicaStore::create(entry->folder, identity_of(a, subject));
    if (!store) {
        entry->removed = true;
        impl.erase(a.uuid);
        return error_response(store.error().with_context("replica of VM " + a.name));
    }
    entry->store = std::move(*store);
    if (auto seeded = maybe_seed(impl, entry, a); !seeded) {
        // Refused as a whole: the administrator chooses another point or --initial network.
        entry->store.reset();
        entry->removed = true;
        std::error_code ec;
        std::filesystem::remove_all(entry->folder, ec);
        impl.erase(a.uuid);
        impl.log(LogLevel::warning,
                 "announcement of VM " + a.name + " refused: " + seeded.error().message());
        return error_response(seeded.error());
    }
    impl.refresh(*entry);
    impl.log(LogLevel::info, "VM " + a.name + " (" + a.uuid + ") from '" + subject +
                                 "' is replicated here, in " + entry->folder.string());
    return json_response(200, routes::state_json(*entry->store));
}

net::HttpResponse update_store(Impl& impl, VmEntry& entry, const routes::Announcement& a,
                               const std::string& subject) {
    if (auto refused = refuse_when_failed_over(entry, "a new announcement")) return *refused;
    ReplicaStore& store = *entry.store;
    const StoreIdentity identity = identity_of(a, subject);
    // Changed disks (a resize on the primary) are taken: the store then applies only a full
    // cycle (can_apply answers resync required until one comes).
    if (!same_identity(store.identity(), identity)) {
        // ReplicaStore::create updates the identity of an existing store; the store's lock
        // is per open file, so ours is closed first and reopened if the update fails.
        impl.abort_cycle(entry, "the VM was announced again");
        entry.store.reset();
        auto updated = ReplicaStore::create(entry.folder, identity);
        if (!updated) {
            auto reopened = ReplicaStore::open(entry.folder);
            if (reopened) {
                entry.store = std::move(*reopened);
            } else {
                entry.removed = true;
                impl.erase(a.uuid);
                impl.log(LogLevel::error,
                         "replica of VM " + a.name + " in " + entry.folder.string() +
                             " could not be reopened: " + reopened.error().message());
            }
            return error_response(updated.error().with_context("replica of VM " + a.name));
        }
        entry.store = std::move(*updated);
    }
    if (entry.store->identity().history != a.history)
        if (auto s = entry.store->set_history(a.history); !s) return error_response(s.error());
    impl.refresh(entry);
    return json_response(200, routes::state_json(*entry.store));
}

net::HttpResponse put_vm(Impl& impl, const routes::Route& route, const net::HttpRequest& request,
                         const std::string& subject) {
    auto body = routes::parse_object(request.body, kMaxJsonBody);
    if (!body) return error_response(body.error());
    auto a = routes::parse_announcement(*body);
    if (!a) return error_response(a.error());
    if (a->uuid != route.uuid)
        return error_response(
            400, "VM announcement: uuid " + a->uuid + " differs from the path's " + route.uuid);
    if (!impl.find_uuid(route.uuid)) return create_store(impl, *a, subject);
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    auto answer = update_store(impl, *locked->entry, *a, subject);
    if (answer.status != 200 || !locked->entry->store) return answer;
    if (auto seeded = maybe_seed(impl, locked->entry, *a); !seeded)
        return error_response(seeded.error());
    return json_response(200, routes::state_json(*locked->entry->store));
}

net::HttpResponse begin_cycle(Impl& impl, const routes::Route& route,
                              const net::HttpRequest& request, const std::string& subject) {
    auto body = routes::parse_object(request.body, kMaxJsonBody);
    if (!body) return error_response(body.error());
    auto begin = routes::parse_begin(*body);
    if (!begin) return error_response(begin.error());
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    VmEntry& entry = *locked->entry;
    ReplicaStore& store = *entry.store;
    if (auto refused = refuse_when_failed_over(entry, "cycles are")) return *refused;
    if (auto refused = refuse_while_seeding(entry)) return *refused;
    if (!routes::same_disks(begin->disks, store.identity().disks))
        return error_response(
            409, "cycle " + begin->header.id + " of VM " + entry.name() + " names disks " +
                     routes::describe_disks(begin->disks) + ", the replica holds " +
                     routes::describe_disks(store.identity().disks) + ": announce the VM again");
    if (entry.cycle) impl.abort_cycle(entry, "superseded by cycle " + begin->header.id);
    if (!begin->header.full)
        if (auto ok = store.can_apply(begin->header); !ok)
            return error_response(Error(ErrorKind::conflict, ok.error().message()),
                                  {{"resync_required", true}});
    InFlightCycle cycle;
    cycle.id = begin->header.id;
    cycle.started = system_clock().now();
    cycle.started_steady = std::chrono::steady_clock::now();
    cycle.last_request = cycle.started_steady;
    for (const auto& d : store.identity().disks) cycle.bounds.push_back(DiskBounds{d.size});
    auto started = store.begin_cycle(begin->header);
    if (!started) {
        entry.last_error = started.error().message();
        impl.refresh(entry);
        return error_response(
            started.error().with_context("VM " + entry.name() + ": cycle " + cycle.id));
    }
    cycle.cycle = std::move(*started);
    entry.cycle.emplace(std::move(cycle));
    return json_response(201, {{"cycle", begin->header.id}});
}

// The in-flight cycle named by the route, or the response refusing.
std::optional<net::HttpResponse> not_in_flight(const VmEntry& entry, const routes::Route& route) {
    if (entry.cycle && entry.cycle->id == route.cycle_id) return std::nullopt;
    return error_response(409, "cycle " + route.cycle_id + " of VM " + entry.name() +
                                   " is not in flight (aborted, superseded or never begun)");
}

net::HttpResponse put_chunk(Impl& impl, const routes::Route& route, const net::HttpRequest& request,
                            const std::string& subject) {
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    VmEntry& entry = *locked->entry;
    if (auto refused = not_in_flight(entry, route)) return *refused;
    InFlightCycle& cycle = *entry.cycle;
    cycle.last_request = std::chrono::steady_clock::now();
    const std::string what =
        "VM " + entry.name() + ": chunk " + std::to_string(route.seq) + " of cycle " + cycle.id;
    auto refuse = [&](const Error& error) {
        impl.abort_cycle(entry, error.message());
        return error_response(error);
    };
    if (request.body.size() > kMaxChunkBytes)
        return refuse(
            Error(ErrorKind::invalid_argument, what + ": " + std::to_string(request.body.size()) +
                                                   " bytes, more than the " +
                                                   std::to_string(kMaxChunkBytes) + " allowed"));
    if (route.seq != cycle.next_seq)
        return refuse(Error(ErrorKind::conflict, what + " arrived out of order (expected chunk " +
                                                     std::to_string(cycle.next_seq) +
                                                     "); the cycle is aborted"));
    std::uint64_t frames = 0;
    bool store_failed = false;
    auto decoded = decode_chunk(request.body, cycle.bounds, [&](const Frame& frame) -> Status {
        ++frames;
        auto written = frame.kind == Frame::Kind::data
                           ? cycle.cycle->write(frame.disk, frame.offset, frame.data)
                           : cycle.cycle->zero(frame.disk, frame.offset, frame.length);
        if (!written) store_failed = true;
        return written;
    });
    if (!decoded) {
        // What the primary sent is at fault unless writing it here failed.
        Error error = store_failed ? decoded.error()
                                   : Error(ErrorKind::invalid_argument, decoded.error().message());
        return refuse(error.with_context(what));
    }
    cycle.digest.add(request.body);
    ++cycle.next_seq;
    cycle.frames += frames;
    cycle.bytes += request.body.size();
    test_pause_point("replica-chunk-applied");  // tests: a kill -9 of the replica mid-cycle
    return json_response(200, {{"frames", frames}});
}

net::HttpResponse commit_cycle(Impl& impl, const routes::Route& route,
                               const net::HttpRequest& request, const std::string& subject) {
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    VmEntry& entry = *locked->entry;
    if (auto refused = not_in_flight(entry, route)) return *refused;
    const std::string what = "VM " + entry.name() + ": commit of cycle " + route.cycle_id;
    auto refuse = [&](const Error& error) {
        impl.abort_cycle(entry, error.message());
        return error_response(error);
    };
    auto body = routes::parse_object(request.body, kMaxJsonBody);
    if (!body) return refuse(body.error().with_context(what));
    auto commit = routes::parse_commit(*body);
    if (!commit) return refuse(commit.error().with_context(what));
    InFlightCycle& cycle = *entry.cycle;
    auto mismatch = [&](const std::string& thing, const std::string& here,
                        const std::string& there) {
        return refuse(Error(ErrorKind::invalid_argument, what + ": the replica received " + here +
                                                             " " + thing + ", the primary sent " +
                                                             there + "; the cycle is aborted"));
    };
    if (commit->chunks != cycle.next_seq)
        return mismatch("chunks", std::to_string(cycle.next_seq), std::to_string(commit->chunks));
    if (commit->frames != cycle.frames)
        return mismatch("frames", std::to_string(cycle.frames), std::to_string(commit->frames));
    if (commit->sha256 != cycle.digest.hex())
        return mismatch("as SHA-256", cycle.digest.hex(), commit->sha256);
    auto point = cycle.cycle->commit();
    if (!point) return refuse(point.error().with_context(what));
    impl.note_cycle(entry, true, "");
    entry.cycle.reset();
    impl.refresh(entry);
    return json_response(200, {{"point", routes::point_json(*point)}});
}

net::HttpResponse abort_route(Impl& impl, const routes::Route& route, const std::string& subject) {
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    VmEntry& entry = *locked->entry;
    if (entry.cycle && entry.cycle->id == route.cycle_id)
        impl.abort_cycle(entry, "the primary aborted it");
    return json_response(200, {{"aborted", true}});
}

net::HttpResponse hashes(Impl& impl, const routes::Route& route, const net::HttpRequest& request,
                         const std::string& subject) {
    auto body = routes::parse_object(request.body, kMaxJsonBody);
    if (!body) return error_response(body.error());
    auto ask = routes::parse_hashes(*body);
    if (!ask) return error_response(ask.error());
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    VmEntry& entry = *locked->entry;
    if (auto refused = refuse_when_failed_over(entry, "block hashes are")) return *refused;
    if (auto refused = refuse_while_seeding(entry)) return *refused;
    if (entry.cycle) entry.cycle->last_request = std::chrono::steady_clock::now();
    const auto& disks = entry.store->identity().disks;
    std::size_t index = disks.size();
    if (ask->target) {
        auto it = std::ranges::find_if(
            disks, [&](const StoreDisk& d) { return d.target == *ask->target; });
        index = static_cast<std::size_t>(it - disks.begin());
    } else if (ask->index && *ask->index < disks.size()) {
        index = static_cast<std::size_t>(*ask->index);
    }
    if (index >= disks.size())
        return error_response(400, "hashes request: VM " + entry.name() +
                                       " has no such disk (it has " +
                                       routes::describe_disks(disks) + ")");
    auto list = entry.store->block_hashes(index, ask->block_size, ask->first, ask->count);
    if (!list)
        return error_response(list.error().with_context("VM " + entry.name() + ": block hashes"));
    net::HttpResponse response;
    response.content_type = "application/octet-stream";
    response.body.reserve(list->size() * 32);
    for (const auto& h : *list)
        response.body.append(reinterpret_cast<const char*>(h.data()), h.size());
    return response;
}

net::HttpResponse planned_failover(Impl& impl, const routes::Route& route,
                                   const net::HttpRequest& request, const std::string& subject) {
    auto body = routes::parse_object(request.body, kMaxJsonBody);
    if (!body) return error_response(body.error());
    auto planned = routes::parse_failover(*body);
    if (!planned) return error_response(planned.error());
    if (!*planned)
        return error_response(400,
                              "failover request: a primary starts only a planned failover "
                              "(planned: true); an unplanned one is run on the replica host");
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    auto done = impl.failover_locked(*locked->entry, std::nullopt, nullptr, true);
    if (!done) return error_response(done.error());
    return json_response(200, *done);
}

net::HttpResponse delete_vm(Impl& impl, const routes::Route& route, const std::string& subject) {
    auto locked = lock_owned(impl, route.uuid, subject);
    if (!locked) return locked.error();
    auto removed = impl.remove_locked(*locked->entry);
    if (!removed) return error_response(removed.error());
    return json_response(200, {{"removed", true}});
}

}  // namespace

net::HttpResponse ReplicaHost::Impl::dispatch(const net::HttpRequest& request,
                                              const std::string& subject) {
    auto route = routes::match(request.method, request.path);
    if (!route) return route.error();
    using K = routes::RouteKind;
    switch (route->kind) {
        case K::hello:
            return hello(*this, subject);
        case K::put_vm:
            return put_vm(*this, *route, request, subject);
        case K::get_vm: {
            auto locked = lock_owned(*this, route->uuid, subject);
            if (!locked) return locked.error();
            return json_response(200, routes::state_json(*locked->entry->store));
        }
        case K::delete_vm:
            return delete_vm(*this, *route, subject);
        case K::begin_cycle:
            return begin_cycle(*this, *route, request, subject);
        case K::put_chunk:
            return put_chunk(*this, *route, request, subject);
        case K::commit_cycle:
            return commit_cycle(*this, *route, request, subject);
        case K::abort_cycle:
            return abort_route(*this, *route, subject);
        case K::hashes:
            return hashes(*this, *route, request, subject);
        case K::failover:
            return planned_failover(*this, *route, request, subject);
        case K::reverse: {
            auto body = routes::parse_object(request.body, kMaxJsonBody);
            if (!body) return error_response(body.error());
            return accept_reverse(route->uuid, subject, *body);
        }
    }
    return error_response(404, "no such route");
}

// ---- ReplicaHost ----

ReplicaHost::ReplicaHost(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicaHost::~ReplicaHost() {
    if (impl_) impl_->stop_seeding();
}

Result<std::unique_ptr<ReplicaHost>> ReplicaHost::open(ReplicaHostOptions options) {
    auto impl = std::make_unique<Impl>();
    impl->options = std::move(options);
    for (const auto& allow : impl->options.allow) {
        if (allow.subject.empty() || allow.storage.empty())
            return fail(ErrorKind::invalid_argument,
                        "replica allow entry: both subject and storage are required");
        impl->scan(allow);
    }
    return std::unique_ptr<ReplicaHost>(new ReplicaHost(std::move(impl)));
}

Status ReplicaHost::set_allow(std::vector<AllowEntry> allow) {
    for (const auto& a : allow)
        if (a.subject.empty() || a.storage.empty())
            return fail(ErrorKind::invalid_argument,
                        "replica allow entry: both subject and storage are required");
    {
        std::lock_guard lock(impl_->mutex);
        impl_->options.allow = allow;
    }
    for (const auto& a : allow) impl_->scan(a);
    return {};
}

net::HttpResponse ReplicaHost::handle(const net::HttpRequest& request) {
    const auto& subject = request.peer.client_certificate_subject;
    if (!subject || subject->empty())
        return error_response(401,
                              "a client certificate is required: replica peers authenticate "
                              "with a certificate signed by this host's replica CA");
    if (!impl_->allowed(*subject)) {
        impl_->log(LogLevel::warning, "replica request from " + request.peer.address +
                                          " refused: certificate subject '" + printable(*subject) +
                                          "' is not on the allow list");
        return error_response(403, "certificate subject '" + printable(*subject) +
                                       "' is not allowed to replicate to this host (add it as a "
                                       "[[replica.allow]] subject in the daemon's config)");
    }
    try {
        impl_->sweep_stale_cycles();
        return impl_->dispatch(request, *subject);
    } catch (const std::exception& e) {
        impl_->log(LogLevel::error, std::string("replica request ") + request.method + " " +
                                        printable(request.path) + ": internal error: " + e.what());
        return error_response(500, "internal error");
    }
}

json ReplicaHost::list() const {
    std::vector<std::shared_ptr<VmEntry>> entries;
    {
        std::lock_guard lock(impl_->mutex);
        for (const auto& [uuid, entry] : impl_->vms) entries.push_back(entry);
    }
    const auto now = system_clock().now();
    json out = json::array();
    for (const auto& entry : entries) {
        auto s = entry->read_summary();
        if (s.state.is_null()) continue;
        const json& latest = s.state["latest"];
        std::string store_state = s.state.value("state", "");
        const bool seeding = store_state == kStateSeeding;
        std::string link_state = store_state == kStateReplicating || store_state.empty() || seeding
                                     ? (latest.is_null() ? "initial" : "normal")
                                     : store_state;
        Health h =
            compute_health(HealthInput{link_state, s.history, std::chrono::seconds(300)}, now);
        if (seeding) h.reason = "seeding from a repository restore point";
        json rpo = nullptr, last_cycle = nullptr;
        if (!latest.is_null()) {
            last_cycle = latest["time"];
            if (auto t = parse_iso8601_utc(latest["time"].get<std::string>()))
                rpo = std::max<std::int64_t>(0, unix_seconds(now) - *t);
        }
        out.push_back({{"vm", s.state["name"]},
                       {"uuid", s.state["uuid"]},
                       {"role", "replica"},
                       {"peer", s.subject},
                       {"state", h.state},
                       {"reason", h.reason},
                       {"interval_s", nullptr},
                       {"history", s.state["history"]},
                       {"app_consistent_every_h", nullptr},
                       {"last_cycle", last_cycle},
                       {"next_cycle", nullptr},
                       {"rpo_s", rpo},
                       {"avg_cycle_s", h.avg_cycle_s},
                       {"max_cycle_s", h.max_cycle_s},
                       {"bytes_sent", h.bytes_sent},
                       {"missed_cycles", h.missed_total},
                       {"cycles_last_hour", h.cycles_last_hour},
                       {"points", s.state["points"].size()},
                       {"last_error", s.last_error.empty() ? json(nullptr) : json(s.last_error)}});
    }
    return {{"replicas", std::move(out)}};
}

Result<json> ReplicaHost::points(const std::string& vm) const {
    auto entry = impl_->find_vm(vm);
    if (!entry) return fail(entry.error());
    auto s = (*entry)->read_summary();
    return json{{"vm", s.state["name"]}, {"points", s.state["points"]}};
}

}  // namespace vmshadow::replica
