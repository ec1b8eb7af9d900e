// SPDX-License-Identifier: MIT
#include "engine/inventory.h"

#include <future>

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

    // libvirt connections are thread-safe; each probe uses its own domain object.
    std::vector<std::future<Result<VmReport>>> probes;
    probes.reserve(domains.size());
    for (const auto& d : domains) {
        probes.push_back(std::async(std::launch::async, [&d, &request] { return report_for(d, request); }));
    }
    std::vector<VmReport> out;
    for (auto& p : probes) {
        auto r = p.get();
        if (!r) return fail(r.error());
        out.push_back(std::move(*r));
    }
    return out;
}

}  // namespace vmshadow::engine
