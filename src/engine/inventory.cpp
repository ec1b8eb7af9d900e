// SPDX-License-Identifier: MIT
#include "engine/inventory.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <system_error>

#include "engine/checkpoint_tree.h"
#include "virt/connection.h"
#include "vmwriter/vm_facts.h"

namespace vmshadow::engine {
namespace {

Result<VmReport> report_for(const virt::Domain& domain, const InventoryRequest& request) {
    vmwriter::FactOptions options;
    options.scratch_dir = request.scratch_dir;
    auto facts = vmwriter::gather_facts(domain, options);
    if (!facts) return fail(facts.error());
    VmReport r;
    r.uuid = domain.uuid();
    r.persistent = domain.is_persistent();
    r.choice = vmwriter::choose_method(*facts, {request.allow_saved_state});
    r.facts = std::move(*facts);
    if (auto tree = load_checkpoint_tree(r.uuid)) {
        r.checkpoints = tree->checkpoints.size();
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        r.checkpoint_warnings = checkpoint_warnings(*tree, now);
    } else {
        r.checkpoint_warnings.push_back(tree.error().message());
    }
    return r;
}

}  // namespace

Result<std::vector<VmReport>> take_inventory(const InventoryRequest& request) {
    auto conn = virt::Connection::open(request.connect_uri);
    if (!conn) return fail(conn.error());

    std::vector<virt::Domain> domains;
    if (request.vms.empty()) {
        auto all = conn->list_domains();
        if (!all) return fail(all.error());
        domains = std::move(*all);
    } else {
        for (const auto& name : request.vms) {
            auto d = conn->lookup(name);
            if (!d) return fail(d.error());
            domains.push_back(std::move(*d));
        }
    }

    // libvirt connections are thread-safe; each probe uses its own domain object. Probes run
    // in batches, so a host with hundreds of VMs doesn't get hundreds of threads at once.
    constexpr std::size_t kParallelProbes = 16;
    std::vector<VmReport> out;
    out.reserve(domains.size());
    for (std::size_t first = 0; first < domains.size(); first += kParallelProbes) {
        std::size_t last = std::min(domains.size(), first + kParallelProbes);
        std::vector<std::future<Result<VmReport>>> probes;
        // A thread that cannot be created is an error; the futures already made wait for
        // their probes as they go out of scope.
        try {
            for (std::size_t i = first; i < last; ++i) {
                probes.push_back(std::async(std::launch::async, [&d = domains[i], &request] {
                    return report_for(d, request);
                }));
            }
        } catch (const std::system_error& e) {
            return fail(ErrorKind::io,
                        std::string("cannot start a thread to probe VMs: ") + e.what());
        }
        for (auto& p : probes) {
            auto r = p.get();
            if (!r) return fail(r.error());
            out.push_back(std::move(*r));
        }
    }
    return out;
}

}  // namespace vmshadow::engine
