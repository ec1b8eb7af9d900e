// SPDX-License-Identifier: MIT
// ReplicaPrimary (replica_primary.h): links, cycles, planned failover, reverse and offline
// initial replication on the primary.
#include "replica/replica_primary.h"

#include <openssl/rand.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/hex.h"
#include "common/time_format.h"
#include "engine/vm_changes.h"
#include "net/cert_authority.h"
#include "replica/cycle_folder.h"
#include "replica/cycle_sender.h"
#include "replica/replica_client.h"
#include "replica/replica_host.h"
#include "replica/replica_link.h"
#include "replica/replica_protocol.h"
#include "replica/replica_store.h"
#include "virt/checkpoints.h"
#include "virt/connection.h"
#include "virt/lifecycle.h"

namespace vmshadow::replica {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr auto kShutdownWait = std::chrono::seconds(120);

std::string random_hex(std::size_t bytes) {
    std::vector<std::uint8_t> raw(bytes);
    RAND_bytes(raw.data(), static_cast<int>(raw.size()));
    return hex_encode(raw);
}

json null_or(const std::optional<std::int64_t>& t) {
    return t ? json(iso8601_utc(*t)) : json(nullptr);
}

// A VM as the replica is told about it: its inactive definition and the disks replicated.
struct VmFacts {
    std::string name, uuid, domain_xml;
    std::vector<std::pair<std::string, std::uint64_t>> disks;
};

Result<VmFacts> read_vm(const virt::Connection& connection, const std::string& vm,
                        const std::vector<std::string>& exclude) {
    auto domain = connection.lookup(vm);
    if (!domain) return std::unexpected(domain.error());
    VmFacts facts;
    facts.name = domain->name();
    facts.uuid = domain->uuid();
    auto xml = domain->xml(virt::XmlFlavor::inactive);
    if (!xml) return std::unexpected(xml.error());
    facts.domain_xml = std::move(*xml);
    auto description = virt::parse_domain_xml(facts.domain_xml);
    if (!description) return std::unexpected(description.error());
    for (const auto& ex : exclude) {
        bool known = std::any_of(description->disks.begin(), description->disks.end(),
                                 [&](const auto& d) { return d.target == ex; });
        if (!known)
            return fail(ErrorKind::not_found,
                        domain->label() + " has no disk " + ex + " to exclude");
    }
    for (const auto& disk : description->disks) {
        if (!virt::disk_is_backed_up(disk)) continue;
        if (std::find(exclude.begin(), exclude.end(), disk.target) != exclude.end()) continue;
        auto info = domain->block_info(disk.target);
        if (!info) return std::unexpected(info.error());
        facts.disks.emplace_back(disk.target, info->capacity);
    }
    if (facts.disks.empty())
        return fail(ErrorKind::invalid_argument, domain->label() + " has no disk to replicate");
    return facts;
}

json announcement(const VmFacts& vm, unsigned history, const std::string& own_endpoint) {
    json disks = json::array();
    for (const auto& [target, size] : vm.disks)
        disks.push_back({{"target", target}, {"size", size}});
    return {{"name", vm.name}, {"uuid", vm.uuid},    {"domain_xml", vm.domain_xml},
            {"disks", disks},  {"history", history}, {"primary_endpoint", own_endpoint}};
}

Status check_spec(const LinkSpec& spec) {
    using std::chrono::seconds;
    if (spec.vm.empty()) return fail(ErrorKind::invalid_argument, "replica enable: no VM named");
    if (spec.to.empty())
        return fail(ErrorKind::invalid_argument,
                    "replica enable: no replica host (--to HOST:PORT)");
    if (spec.interval != seconds(30) && spec.interval != seconds(300) &&
        spec.interval != seconds(900))
        return fail(ErrorKind::invalid_argument,
                    "replica interval " + std::to_string(spec.interval.count()) +
                        " s: use 30s, 5m or 15m (as Hyper-V Replica offers)");
    if (spec.history > kMaxHistory)
        return fail(ErrorKind::invalid_argument,
                    "replica history " + std::to_string(spec.history) + ": at most 24");
    if (spec.app_consistent_every_h > 24)
        return fail(ErrorKind::invalid_argument, "app-consistent-every " +
                                                     std::to_string(spec.app_consistent_every_h) +
                                                     " h: use 0 (never) to 24");
    if (spec.bandwidth_mib > 100000)
        return fail(ErrorKind::invalid_argument, "bandwidth: at most 100000 MiB/s (0: no cap)");
    if (spec.initial == LinkSpec::Initial::repository &&
        (spec.seed_repository.empty() || spec.seed_point.empty()))
        return fail(ErrorKind::invalid_argument,
                    "initial replication from a repository needs the repository and the point");
    return {};
}

// "HH:MM" (UTC, the next such time) or an ISO 8601 UTC time → the ISO time it means.
Result<std::string> resolve_start_at(const std::string& text, Clock::time_point now) {
    if (auto t = parse_iso8601_utc(text)) return iso8601_utc(*t);
    unsigned h = 0, m = 0;
    char sep = 0;
    if (text.size() == 5 && std::sscanf(text.c_str(), "%2u%c%2u", &h, &sep, &m) == 3 &&
        sep == ':' && h < 24 && m < 60) {
        std::int64_t t = unix_seconds(now);
        std::int64_t day = t - t % 86400;
        std::int64_t at = day + h * 3600 + m * 60;
        if (at <= t) at += 86400;
        return iso8601_utc(at);
    }
    return fail(ErrorKind::invalid_argument,
                "start-at \"" + text + "\": use HH:MM (UTC) or 2026-12-08T01:00:00Z");
}

}  // namespace

struct ReplicaPrimary::Impl {
    ReplicaPrimaryOptions options;
    fs::path dir;
    mutable std::mutex mutex;                 // links, running, options.tls
    std::map<std::string, LinkRecord> links;  // by uuid
    std::set<std::string> running;            // uuids with a cycle or operation under way

    void log(LogLevel level, const std::string& line) const {
        if (options.log) options.log(level, "replica: " + line);
    }
    Clock::time_point now() const { return options.clock->now(); }

    // Under `mutex`.
    LinkRecord* find(const std::string& vm) {
        if (auto it = links.find(vm); it != links.end()) return &it->second;
        for (auto& [uuid, link] : links)
            if (link.spec.vm == vm) return &link;
        return nullptr;
    }
    Result<LinkRecord*> need(const std::string& vm) {
        if (auto* link = find(vm)) return link;
        return fail(ErrorKind::not_found, "vm '" + vm +
                                              "' is not replicated from this host "
                                              "(vmshadow replica status lists what is)");
    }
    Status save(const LinkRecord& link) { return save_link(link_path(dir, link.uuid), link); }

    Result<std::unique_ptr<ReplicaClient>> client(const std::string& peer) {
        ReplicaTls tls;
        {
            std::lock_guard lock(mutex);
            tls = options.tls;
        }
        return connect_replica(peer, tls);
    }

    // Marks a link busy for the caller's scope; conflict when something else runs on it.
    class Busy {
      public:
        Busy(Impl& impl, std::string uuid) : impl_(&impl), uuid_(std::move(uuid)) {}
        Busy(Busy&& o) noexcept : impl_(std::exchange(o.impl_, nullptr)), uuid_(o.uuid_) {}
        ~Busy() {
            if (!impl_) return;
            std::lock_guard lock(impl_->mutex);
            impl_->running.erase(uuid_);
        }

      private:
        Impl* impl_;
        std::string uuid_;
    };
    Result<std::pair<LinkRecord, Busy>> claim(const std::string& vm) {
        std::lock_guard lock(mutex);
        auto link = need(vm);
        if (!link) return std::unexpected(link.error());
        if (!running.insert((*link)->uuid).second)
            return fail(ErrorKind::conflict, "vm '" + (*link)->spec.vm +
                                                 "': a replica cycle or operation is already "
                                                 "running");
        return std::pair<LinkRecord, Busy>(**link, Busy(*this, (*link)->uuid));
    }

    // Applies `change` to the stored link (it may have been paused meanwhile) and saves it.
    Status update(const std::string& uuid, const std::function<void(LinkRecord&)>& change) {
        std::lock_guard lock(mutex);
        auto it = links.find(uuid);
        if (it == links.end()) return fail(ErrorKind::not_found, "the replica link was removed");
        change(it->second);
        trim_history(it->second.cycles, now());
        return save(it->second);
    }

    Result<json> cycle(const LinkRecord& link, TaskContext* task, bool allow_resync_retry);
    Result<json> one_read(const LinkRecord& link, ReplicaClient& client, bool resync,
                          const std::string& replica_latest, TaskContext* task,
                          bool* resync_required);
    json status_of(const LinkRecord& link) const;
};

namespace {
std::string text_of(const json& point, const char* key) {
    return point.is_object() && point.contains(key) && point[key].is_string()
               ? point[key].get<std::string>()
               : std::string();
}
}  // namespace

// One read of the VM into the replica (or a folder): the engine's read with a CycleSender.
Result<json> ReplicaPrimary::Impl::one_read(const LinkRecord& link, ReplicaClient& client,
                                            bool resync, const std::string& replica_latest,
                                            TaskContext* task, bool* resync_required) {
    auto connection = virt::Connection::open(options.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    bool full = replica_latest.empty() || resync || link.checkpoint_xml.empty();
    engine::ChangeReadOptions read;
    read.vm = link.spec.vm;
    read.chain_id = link.chain_id;
    read.previous_checkpoint_xml = full ? "" : link.checkpoint_xml;
    read.force_full = full;
    read.exclude_disks = link.spec.exclude_disks;
    read.scratch_dir = options.scratch_dir;
    read.runtime_dir = options.runtime_dir;
    read.task = task;
    auto started = now();
    if (link.spec.app_consistent_every_h > 0) {
        auto every = std::chrono::hours(link.spec.app_consistent_every_h);
        read.application_consistent =
            !link.last_app_consistent ||
            started - Clock::time_point(std::chrono::seconds(*link.last_app_consistent)) >= every;
    }
    SenderPlan plan;
    plan.uuid = link.uuid;
    plan.base_token = full ? "" : link.checkpoint;
    plan.replica_latest = replica_latest;
    plan.bandwidth_mib = link.spec.bandwidth_mib;
    const std::string uuid = link.uuid;
    const bool to_folder = client.peer().starts_with("folder ");
    // The checkpoint is recorded once the replica answered the commit; the engine retires the
    // chain's older checkpoints only after this returns.
    auto on_committed = [&](const json& point, const engine::ChangeSet& set) -> Status {
        std::string xml;
        std::string token =
            text_of(point, "token").empty() ? set.checkpoint : text_of(point, "token");
        if (auto domain = connection->lookup(set.uuid.empty() ? set.vm : set.uuid);
            domain && !set.checkpoint.empty()) {
            if (auto x = virt::checkpoint_xml(*domain, set.checkpoint)) xml = std::move(*x);
        }
        if (xml.empty())
            log(LogLevel::warning, "vm '" + set.vm + "': the XML of checkpoint " + set.checkpoint +
                                       " could not be read: the next cycle is a resync");
        return update(uuid, [&](LinkRecord& l) {
            if (to_folder) {
                l.exported_token = token;
                l.exported_checkpoint_xml = xml;
                return;
            }
            l.checkpoint = token;
            l.checkpoint_xml = xml;
            l.point_time = text_of(point, "time").empty() ? set.time : text_of(point, "time");
            l.exported_token.clear();
            l.exported_checkpoint_xml.clear();
            if (l.state != "paused") l.state = "normal";
            if (l.state == "paused") l.paused_from = "normal";
            if (set.consistency == "application") l.last_app_consistent = unix_seconds(started);
        });
    };
    CycleSender sender(client, plan, on_committed, task);
    auto outcome = engine::read_vm_changes(*connection, read, sender);
    if (!outcome) {
        sender.abort();
        *resync_required = sender.resync_required();
        return std::unexpected(outcome.error());
    }
    // The checkpoint's XML as the engine made it (the same, read back after the commit).
    if (!outcome->checkpoint_xml.empty() && !to_folder) {
        (void)update(uuid, [&](LinkRecord& l) {
            if (l.checkpoint == outcome->set.checkpoint) l.checkpoint_xml = outcome->checkpoint_xml;
        });
    }
    const auto& stats = sender.stats();
    json result = {{"vm", link.spec.vm},
                   {"token", outcome->set.checkpoint},
                   {"time", outcome->set.time},
                   {"consistency", outcome->set.consistency},
                   {"kind", stats.full     ? "full"
                            : stats.resync ? "resync"
                                           : "incremental"},
                   {"bytes_read", outcome->bytes_read},
                   {"bytes_sent", stats.bytes_sent},
                   {"chunks", stats.chunks},
                   {"frames", stats.frames},
                   {"blocks_compared", stats.blocks_compared},
                   {"blocks_sent", stats.blocks_sent},
                   {"point", stats.point},
                   {"notes", outcome->notes}};
    for (const auto& d : outcome->set.disks)
        if (!d.incremental && !d.full_reason.empty())
            result["notes"].push_back(d.target + " read in full: " + d.full_reason);
    return result;
}

Result<json> ReplicaPrimary::Impl::cycle(const LinkRecord& link, TaskContext* task,
                                         bool allow_resync_retry) {
    auto started = now();
    auto steady = std::chrono::steady_clock::now();
    (void)update(link.uuid, [&](LinkRecord& l) {
        l.last_attempt = unix_seconds(started);
        l.cycle_running = l.last_attempt;
    });
    // Waiting for an import or a seed on the replica: not a cycle, nothing to record.
    bool awaiting_import = false;
    auto record = [&](const Result<json>& result) {
        if (awaiting_import) {
            (void)update(link.uuid, [&](LinkRecord& l) { l.cycle_running.reset(); });
            return;
        }
        CycleRecord c;
        c.started = started;
        c.seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - steady).count();
        c.result = result ? CycleRecord::Result::ok : CycleRecord::Result::failed;
        if (result) {
            c.bytes_sent = result->value("bytes_sent", std::uint64_t{0});
            if (auto t = parse_iso8601_utc(result->value("time", "")))
                c.point_time = Clock::time_point(std::chrono::seconds(*t));
        }
        (void)update(link.uuid, [&](LinkRecord& l) {
            l.cycle_running.reset();
            l.cycles.push_back(c);
            ++l.cycles_total;
            l.bytes_sent_total += c.bytes_sent;
            l.last_error = result ? "" : result.error().message();
        });
    };
    auto run = [&]() -> Result<json> {
        auto client = this->client(link.spec.to);
        if (!client) return std::unexpected(client.error());
        auto state = (*client)->vm_state(link.uuid);
        // The replica forgot the VM (removed there), or holds other disks than the VM has now
        // (a disk grown with blockresize, added or removed): announce it again. The cycle then
        // finds the layers' sizes changed and ends as a full copy, never a wrong incremental.
        bool announce = !state && state.error().kind() == ErrorKind::not_found;
        std::optional<VmFacts> vm;
        if (state && state->contains("disks")) {
            auto connection = virt::Connection::open(options.connect_uri);
            if (!connection) return std::unexpected(connection.error());
            auto facts = read_vm(*connection, link.spec.vm, link.spec.exclude_disks);
            if (!facts) return std::unexpected(facts.error());
            announce = announcement(*facts, 0, "")["disks"] != (*state)["disks"];
            vm = std::move(*facts);
        }
        if (announce) {
            if (!vm) {
                auto connection = virt::Connection::open(options.connect_uri);
                if (!connection) return std::unexpected(connection.error());
                auto facts = read_vm(*connection, link.spec.vm, link.spec.exclude_disks);
                if (!facts) return std::unexpected(facts.error());
                vm = std::move(*facts);
            }
            if (task) task->info("announcing " + link.spec.vm + " again: its disks changed");
            state = (*client)->announce(link.uuid,
                                        announcement(*vm, link.spec.history, options.own_endpoint));
        }
        if (!state) return std::unexpected(state.error());
        std::string latest;
        if (state->contains("latest") && (*state)["latest"].is_object())
            latest = text_of((*state)["latest"], "token");
        if (text_of(*state, "state") == "seeding") {
            // Restoring the seed takes a while there; like an import, not a failed cycle.
            awaiting_import = true;
            return fail(ErrorKind::conflict, "vm '" + link.spec.vm + "': " + link.spec.to +
                                                 " is seeding it from restore point " +
                                                 link.spec.seed_point +
                                                 ": the first cycle (a resync) follows");
        }
        if (latest.empty() && link.spec.initial == LinkSpec::Initial::repository)
            log(LogLevel::warning, "vm '" + link.spec.vm + "': " + link.spec.to +
                                       " holds no seeded point (its replica status says why): "
                                       "sending a full copy");
        LinkRecord current = link;
        if (!current.exported_token.empty()) {
            awaiting_import = latest != current.exported_token;
            if (awaiting_import)
                return fail(ErrorKind::conflict, "vm '" + link.spec.vm +
                                                     "': waiting for `vmshadow replica "
                                                     "import-initial` of the exported copy on " +
                                                     link.spec.to);
            // The replica imported the export: its checkpoint is the link's from now on.
            (void)update(link.uuid, [&](LinkRecord& l) {
                l.checkpoint = l.exported_token;
                l.checkpoint_xml = l.exported_checkpoint_xml;
                l.exported_token.clear();
                l.exported_checkpoint_xml.clear();
                if (l.state == "initial") l.state = "normal";
                current = l;
            });
        }
        bool resync =
            !latest.empty() && (current.state == "resync-required" || current.checkpoint.empty());
        bool resync_required = false;
        auto result = one_read(current, **client, resync, latest, task, &resync_required);
        if (!result && resync_required) {
            (void)update(link.uuid, [](LinkRecord& l) {
                if (l.state != "paused") l.state = "resync-required";
            });
            if (!allow_resync_retry) return result;
            log(LogLevel::warning, "vm '" + link.spec.vm + "': " + result.error().message());
            if (task) task->warn(result.error().message() + ": resynchronising now");
            result = one_read(current, **client, true, latest, task, &resync_required);
            if (!result && resync_required) {
                // Not even a resync applies (the disks changed size): a full copy.
                if (task) task->warn(result.error().message() + ": sending a full copy");
                result = one_read(current, **client, true, "", task, &resync_required);
            }
        }
        return result;
    };
    auto result = run();
    record(result);
    if (result)
        log(LogLevel::info, "vm '" + link.spec.vm + "': cycle " + result->value("kind", "") +
                                " sent " + std::to_string(result->value("bytes_sent", 0ull)) +
                                " bytes");
    else
        log(awaiting_import ? LogLevel::info : LogLevel::warning,
            "vm '" + link.spec.vm + "': " + (awaiting_import ? "" : "cycle failed: ") +
                result.error().message());
    return result;
}

json ReplicaPrimary::Impl::status_of(const LinkRecord& link) const {
    HealthInput input;
    input.link_state = link.state;
    input.cycles = link.cycles;
    input.interval = link.spec.interval;
    auto t = now();
    Health h = compute_health(input, t);
    json next = nullptr;
    if (link.state != "paused" && link.state != "failed-over") {
        std::int64_t at =
            link.last_attempt ? *link.last_attempt + link.spec.interval.count() : unix_seconds(t);
        if (!link.last_attempt && link.spec.start_at)
            if (auto s = parse_iso8601_utc(*link.spec.start_at)) at = std::max(at, *s);
        next = iso8601_utc(at);
    }
    return {{"vm", link.spec.vm},
            {"uuid", link.uuid},
            {"role", "primary"},
            {"peer", link.spec.to},
            {"state", h.state},
            {"reason", h.reason},
            {"interval_s", link.spec.interval.count()},
            {"history", link.spec.history},
            {"app_consistent_every_h", link.spec.app_consistent_every_h},
            {"last_cycle", null_or(link.last_attempt)},
            {"next_cycle", next},
            {"rpo_s", h.rpo_s ? json(*h.rpo_s) : json(nullptr)},
            {"avg_cycle_s", h.avg_cycle_s},
            {"max_cycle_s", h.max_cycle_s},
            {"bytes_sent", link.bytes_sent_total},
            {"missed_cycles", h.missed_total},
            {"cycles_last_hour", h.cycles_last_hour},
            {"points", nullptr},
            {"last_error", link.last_error},
            {"bandwidth_mib", link.spec.bandwidth_mib},
            {"exclude_disks", link.spec.exclude_disks},
            {"initial", initial_name(link.spec.initial)},
            {"last_point", link.point_time.empty() ? json(nullptr) : json(link.point_time)},
            {"awaiting_import", !link.exported_token.empty()}};
}

// ---- ReplicaPrimary ------------------------------------------------------------------------

ReplicaPrimary::ReplicaPrimary(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicaPrimary::~ReplicaPrimary() = default;

namespace {
// The daemon died during a cycle (kill -9, a crash, a power cut): nothing recorded its end.
// The replica discarded the half-sent cycle and the chain's checkpoint did not move, so the
// next cycle repairs it; until then health must say a cycle failed, not that all is well.
void record_interrupted_cycle(LinkRecord& link) {
    CycleRecord c;
    c.started = Clock::time_point(std::chrono::seconds(*link.cycle_running));
    c.result = CycleRecord::Result::failed;
    link.cycles.push_back(c);
    ++link.cycles_total;
    link.last_error = "the cycle started at " + iso8601_utc(*link.cycle_running) +
                      " was cut off: vmshadowd stopped during it; the next cycle sends its changes";
    link.cycle_running.reset();
}
}  // namespace

Result<std::unique_ptr<ReplicaPrimary>> ReplicaPrimary::open(ReplicaPrimaryOptions options) {
    auto impl = std::make_unique<Impl>();
    if (!options.clock) options.clock = &system_clock();
    impl->dir = options.state_dir / "replica";
    impl->options = std::move(options);
    std::error_code ec;
    fs::create_directories(impl->dir, ec);
    if (ec) return fail(ErrorKind::io, impl->dir.string() + ": " + ec.message());
    fs::permissions(impl->dir, fs::perms::owner_all, ec);
    for (const auto& entry : fs::directory_iterator(impl->dir, ec)) {
        const auto name = entry.path().filename().string();
        if (!name.ends_with(".json") || name.starts_with(".")) continue;
        auto link = load_link(entry.path());
        if (!link) {
            // One damaged record must not stop the daemon or the other links.
            impl->log(LogLevel::error, link.error().message());
            continue;
        }
        if (link->cycle_running) {
            record_interrupted_cycle(*link);
            if (auto s = save_link(entry.path(), *link); !s)
                impl->log(LogLevel::error, s.error().message());
        }
        impl->links.emplace(link->uuid, std::move(*link));
    }
    if (ec) return fail(ErrorKind::io, impl->dir.string() + ": " + ec.message());
    return std::unique_ptr<ReplicaPrimary>(new ReplicaPrimary(std::move(impl)));
}

Status ReplicaPrimary::set_tls(ReplicaTls tls) {
    std::lock_guard lock(impl_->mutex);
    impl_->options.tls = std::move(tls);
    return {};
}

Result<json> ReplicaPrimary::enable(const LinkSpec& given) {
    LinkSpec spec = given;
    if (auto s = check_spec(spec); !s) return std::unexpected(s.error());
    if (spec.start_at) {
        auto at = resolve_start_at(*spec.start_at, impl_->now());
        if (!at) return std::unexpected(at.error());
        spec.start_at = *at;
    }
    auto connection = virt::Connection::open(impl_->options.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    auto vm = read_vm(*connection, spec.vm, spec.exclude_disks);
    if (!vm) return std::unexpected(vm.error());
    spec.vm = vm->name;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->links.contains(vm->uuid))
            return fail(ErrorKind::conflict,
                        "vm '" + vm->name + "' is already replicated to " +
                            impl_->links[vm->uuid].spec.to +
                            " (vmshadow replica remove first to change the replica host)");
    }
    auto client = impl_->client(spec.to);
    if (!client) return std::unexpected(client.error());
    auto hello = (*client)->hello();
    if (!hello) return std::unexpected(hello.error());
    if (hello->value("version", 0) != kProtocolVersion)
        return fail(ErrorKind::unsupported,
                    "replica host " + spec.to + " speaks replica protocol version " +
                        std::to_string(hello->value("version", 0)) + ", this host 1");
    json announced = announcement(*vm, spec.history, impl_->options.own_endpoint);
    if (spec.initial == LinkSpec::Initial::repository) {
        announced["seed"] = {{"repository", spec.seed_repository}, {"point", spec.seed_point}};
    }
    auto state = (*client)->announce(vm->uuid, announced);
    if (!state) return std::unexpected(state.error());
    LinkRecord link;
    link.spec = spec;
    link.uuid = vm->uuid;
    link.chain_id = random_hex(8);
    link.state = "initial";
    std::lock_guard lock(impl_->mutex);
    if (impl_->links.contains(link.uuid))
        return fail(ErrorKind::conflict, "vm '" + vm->name + "' was enabled meanwhile");
    if (auto s = impl_->save(link); !s) return std::unexpected(s.error());
    impl_->links.emplace(link.uuid, link);
    impl_->log(LogLevel::info, "vm '" + vm->name + "' replicates to " + spec.to + " (" +
                                   hello->value("subject", std::string("?")) + ")");
    return impl_->status_of(link);
}

Status ReplicaPrimary::pause(const std::string& vm) {
    std::lock_guard lock(impl_->mutex);
    auto link = impl_->need(vm);
    if (!link) return std::unexpected(link.error());
    auto& l = **link;
    if (l.state == "paused") return {};
    if (l.state == "failed-over")
        return fail(ErrorKind::conflict, "vm '" + l.spec.vm + "' is failed over: nothing to pause");
    l.paused_from = l.state;
    l.state = "paused";
    return impl_->save(l);
}

Status ReplicaPrimary::resume(const std::string& vm) {
    std::lock_guard lock(impl_->mutex);
    auto link = impl_->need(vm);
    if (!link) return std::unexpected(link.error());
    auto& l = **link;
    if (l.state != "paused") return {};
    l.state = l.paused_from.empty() ? (l.checkpoint.empty() ? "initial" : "normal") : l.paused_from;
    l.paused_from.clear();
    return impl_->save(l);
}

Status ReplicaPrimary::remove(const std::string& vm, bool on_replica) {
    auto claimed = impl_->claim(vm);
    if (!claimed) return std::unexpected(claimed.error());
    const LinkRecord& link = claimed->first;
    if (on_replica) {
        auto client = impl_->client(link.spec.to);
        if (!client) return std::unexpected(client.error());
        auto removed = (*client)->remove(link.uuid);
        if (!removed && removed.error().kind() != ErrorKind::not_found)
            return std::unexpected(removed.error());
    }
    if (auto connection = virt::Connection::open(impl_->options.connect_uri)) {
        auto deleted = engine::delete_chain(*connection, link.spec.vm, link.chain_id);
        if (!deleted && deleted.error().kind() != ErrorKind::not_found)
            return std::unexpected(deleted.error());
    }
    std::lock_guard lock(impl_->mutex);
    std::error_code ec;
    fs::remove(link_path(impl_->dir, link.uuid), ec);
    if (ec) return fail(ErrorKind::io, "cannot remove the replica link: " + ec.message());
    impl_->links.erase(link.uuid);
    impl_->log(LogLevel::info, "vm '" + link.spec.vm + "': replication removed");
    return {};
}

Status ReplicaPrimary::request_resync(const std::string& vm) {
    std::lock_guard lock(impl_->mutex);
    auto link = impl_->need(vm);
    if (!link) return std::unexpected(link.error());
    auto& l = **link;
    if (l.state == "failed-over")
        return fail(ErrorKind::conflict,
                    "vm '" + l.spec.vm + "' is failed over: nothing to resync");
    if (l.state == "initial") return {};  // the first cycle copies everything anyway
    if (l.state == "paused")
        l.paused_from = "resync-required";
    else
        l.state = "resync-required";
    return impl_->save(l);
}

std::vector<std::string> ReplicaPrimary::due(Clock::time_point now) const {
    std::vector<std::pair<std::int64_t, std::string>> due;
    std::lock_guard lock(impl_->mutex);
    std::int64_t t = unix_seconds(now);
    for (const auto& [uuid, l] : impl_->links) {
        if (l.state == "paused" || l.state == "failed-over" || impl_->running.contains(uuid))
            continue;
        if (!l.exported_token.empty() && l.state == "initial" && l.last_attempt &&
            t - *l.last_attempt < 60)
            continue;  // waiting for an import: looked at once a minute
        std::int64_t at = l.last_attempt ? *l.last_attempt + l.spec.interval.count() : 0;
        if (!l.last_attempt && l.spec.start_at)
            if (auto s = parse_iso8601_utc(*l.spec.start_at)) at = *s;
        if (l.spec.initial == LinkSpec::Initial::offline && l.state == "initial" &&
            l.exported_token.empty())
            continue;  // the initial copy goes by export-initial, not by a cycle
        if (at <= t) due.emplace_back(at, l.spec.vm);
    }
    std::sort(due.begin(), due.end());
    std::vector<std::string> out;
    for (auto& [at, vm] : due) out.push_back(std::move(vm));
    return out;
}

void ReplicaPrimary::note_missed(const std::string& vm) {
    std::lock_guard lock(impl_->mutex);
    auto* link = impl_->find(vm);
    if (!link) return;
    CycleRecord c;
    c.started = impl_->now();
    c.result = CycleRecord::Result::missed;
    link->cycles.push_back(c);
    trim_history(link->cycles, impl_->now());
    (void)impl_->save(*link);
}

Result<json> ReplicaPrimary::run_cycle(const std::string& vm, TaskContext* task) {
    auto claimed = impl_->claim(vm);
    if (!claimed) return std::unexpected(claimed.error());
    const LinkRecord& link = claimed->first;
    if (link.state == "paused")
        return fail(ErrorKind::conflict,
                    "vm '" + link.spec.vm + "': replication is paused (vmshadow replica resume)");
    if (link.state == "failed-over")
        return fail(ErrorKind::conflict, "vm '" + link.spec.vm + "' is failed over to " +
                                             link.spec.to + ": no cycles from here");
    return impl_->cycle(link, task, true);
}

Result<json> ReplicaPrimary::planned_failover(const std::string& vm, TaskContext* task) {
    auto claimed = impl_->claim(vm);
    if (!claimed) return std::unexpected(claimed.error());
    LinkRecord link = claimed->first;
    if (link.state != "normal" && link.state != "resync-required")
        return fail(ErrorKind::conflict, "vm '" + link.spec.vm + "' is " + link.state +
                                             ": a planned failover needs replication running "
                                             "(normal)");
    auto say = [&](const std::string& line) {
        if (task) task->info(line);
        impl_->log(LogLevel::info, "vm '" + link.spec.vm + "': " + line);
    };
    say("planned failover to " + link.spec.to + ": a cycle while the VM runs");
    auto first = impl_->cycle(link, task, true);
    if (!first) return std::unexpected(first.error().with_context("planned failover"));
    auto connection = virt::Connection::open(impl_->options.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    auto domain = connection->lookup(link.uuid);
    if (!domain) return std::unexpected(domain.error());
    say("shutting the guest down (ACPI; waiting up to 120 s)");
    if (auto s = virt::shutdown_domain(*domain); !s) return std::unexpected(s.error());
    auto deadline = std::chrono::steady_clock::now() + kShutdownWait;
    for (;;) {
        auto state = domain->state();
        if (!state) return std::unexpected(state.error());
        if (*state == virt::DomainState::shutoff) break;
        if (std::chrono::steady_clock::now() >= deadline)
            return fail(
                ErrorKind::timeout,
                domain->label() +
                    " did not shut down within 120 s; nothing was failed "
                    "over. Shut the guest down yourself (or force it off with `virsh "
                    "destroy`, losing what it did not write) and run planned-failover again");
        if (task) {
            if (auto c = task->check_cancel("planned failover"); !c)
                return std::unexpected(c.error());
        }
        std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    say("the guest is off: sending its last changes");
    {
        std::lock_guard lock(impl_->mutex);
        if (auto* l = impl_->find(link.uuid)) link = *l;
    }
    auto last = impl_->cycle(link, task, true);
    if (!last)
        return std::unexpected(last.error().with_context(
            "planned failover: the last cycle failed (the VM stays shut off here; run "
            "planned-failover again)"));
    auto client = impl_->client(link.spec.to);
    if (!client) return std::unexpected(client.error());
    say("asking " + link.spec.to + " to start the VM from the latest point");
    auto answer = (*client)->failover(link.uuid, json{{"planned", true}});
    if (!answer) return std::unexpected(answer.error().with_context("planned failover"));
    (void)impl_->update(link.uuid, [](LinkRecord& l) {
        l.state = "failed-over";
        l.paused_from.clear();
    });
    say("failed over: the VM runs on " + link.spec.to);
    return json{{"vm", link.spec.vm},
                {"failed_over_to", link.spec.to},
                {"last_cycle", *last},
                {"replica", *answer}};
}

Result<json> ReplicaPrimary::reverse(const ReverseSource& source, TaskContext* task) {
    if (source.peer_endpoint.empty())
        return fail(ErrorKind::conflict,
                    "vm '" + source.vm +
                        "': the old primary did not announce its replica "
                        "listener ([replica] listen there): reverse replication cannot reach it");
    std::optional<LinkSpec> earlier;
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->running.contains(source.uuid))
            return fail(ErrorKind::conflict, "vm '" + source.vm + "': a replica operation runs");
        if (auto* old = impl_->find(source.uuid)) {
            if (old->state != "failed-over")
                return fail(ErrorKind::conflict,
                            "vm '" + source.vm + "' already replicates to " + old->spec.to);
            earlier = old->spec;  // keeps the administrator's interval, history, cap
        } else if (auto released = load_link(link_path(impl_->dir / "released", source.uuid))) {
            earlier = released->spec;  // this host was its primary before
        }
    }
    LinkRecord link = reverse_link(source, earlier);
    if (task)
        task->info("offering " + source.peer_endpoint + " to become the replica of '" + source.vm +
                   "'");
    auto client = impl_->client(source.peer_endpoint);
    if (!client) return std::unexpected(client.error());
    json disks = json::array();
    for (const auto& [target, size] : source.disks)
        disks.push_back({{"target", target}, {"size", size}});
    json offer = {{"name", source.vm},
                  {"uuid", source.uuid},
                  {"domain_xml", source.domain_xml},
                  {"disks", disks},
                  {"history", source.history},
                  {"primary_endpoint", impl_->options.own_endpoint},
                  {"token", source.token},
                  {"time", source.time}};
    auto answer = (*client)->reverse(source.uuid, offer);
    if (!answer) return std::unexpected(answer.error().with_context("reverse replication"));
    std::lock_guard lock(impl_->mutex);
    if (auto s = impl_->save(link); !s) return std::unexpected(s.error());
    impl_->links[link.uuid] = link;
    std::error_code ec;
    fs::remove(link_path(impl_->dir / "released", link.uuid), ec);
    impl_->log(LogLevel::info,
               "vm '" + source.vm + "' now replicates back to " + source.peer_endpoint +
                   " from checkpoint " + source.token +
                   (source.planned ? ""
                                   : " (unplanned failover: the first cycle is a resync, the "
                                     "old primary's disks hold writes never replicated)"));
    return json{{"vm", source.vm}, {"replica", *answer}, {"status", impl_->status_of(link)}};
}

Result<json> ReplicaPrimary::export_initial(const std::string& vm, const fs::path& dir,
                                            TaskContext* task) {
    auto claimed = impl_->claim(vm);
    if (!claimed) return std::unexpected(claimed.error());
    const LinkRecord& link = claimed->first;
    if (link.state != "initial")
        return fail(ErrorKind::conflict, "vm '" + link.spec.vm + "' is " + link.state +
                                             ": an initial copy is exported only before the "
                                             "first cycle");
    auto connection = virt::Connection::open(impl_->options.connect_uri);
    if (!connection) return std::unexpected(connection.error());
    auto facts = read_vm(*connection, link.spec.vm, link.spec.exclude_disks);
    if (!facts) return std::unexpected(facts.error());
    std::string subject;
    {
        ReplicaTls tls;
        {
            std::lock_guard lock(impl_->mutex);
            tls = impl_->options.tls;
        }
        if (auto cert = net::read_certificate(tls.certificate_file)) subject = cert->subject;
    }
    auto folder = folder_client(
        dir, announcement(*facts, link.spec.history, impl_->options.own_endpoint), subject);
    if (!folder) return std::unexpected(folder.error());
    bool resync_required = false;
    auto result = impl_->one_read(link, **folder, false, "", task, &resync_required);
    if (!result) return std::unexpected(result.error().with_context("export-initial"));
    (*result)["dir"] = dir.string();
    impl_->log(LogLevel::info, "vm '" + link.spec.vm + "': initial copy exported to " +
                                   dir.string() + "; import it on " + link.spec.to);
    return result;
}

Status ReplicaPrimary::release(const std::string& uuid) {
    LinkRecord link;
    {
        std::lock_guard lock(impl_->mutex);
        auto it = impl_->links.find(uuid);
        if (it == impl_->links.end()) return {};
        link = it->second;
    }
    if (auto connection = virt::Connection::open(impl_->options.connect_uri))
        (void)engine::delete_chain(*connection, link.spec.vm, link.chain_id);
    std::lock_guard lock(impl_->mutex);
    // The administrator's settings are kept aside: when this host becomes the VM's primary
    // again (reverse after a failback), its link starts with them instead of the defaults.
    (void)save_link(link_path(impl_->dir / "released", uuid), link);
    std::error_code ec;
    fs::remove(link_path(impl_->dir, uuid), ec);
    impl_->links.erase(uuid);
    impl_->log(LogLevel::info, "vm '" + link.spec.vm +
                                   "': this host is its replica now; the "
                                   "primary link was dropped");
    return {};
}

json ReplicaPrimary::list() const {
    std::lock_guard lock(impl_->mutex);
    json out = json::array();
    for (const auto& [uuid, link] : impl_->links) out.push_back(impl_->status_of(link));
    return json{{"replicas", out}};
}

}  // namespace vmshadow::replica
