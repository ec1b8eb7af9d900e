// SPDX-License-Identifier: MIT
#include "virt/connection.h"

#include <algorithm>

#include "virt/libvirt_error.h"

namespace vmshadow::virt {

Result<Connection> Connection::open(const std::string& uri) {
    silence_libvirt_default_error_printing();
    ConnectHandle handle(virConnectOpen(uri.empty() ? nullptr : uri.c_str()));
    if (!handle) {
        std::string shown = uri.empty() ? "the default URI" : "'" + uri + "'";
        Error e = libvirt_error("cannot connect to libvirt at " + shown);
        return fail(ErrorKind::unavailable,
                    e.message() +
                        " (is libvirtd running? scripts/setup-host.sh starts it; "
                        "--connect chooses another URI)");
    }
    return Connection(std::move(handle));
}

std::string Connection::uri() const {
    CString text(virConnectGetURI(handle_.get()));
    return text ? std::string(text.get()) : std::string();
}

Result<Domain> Connection::lookup(std::string_view name_or_uuid) const {
    std::string key(name_or_uuid);
    virDomainPtr dom = virDomainLookupByName(handle_.get(), key.c_str());
    if (!dom && key.size() == VIR_UUID_STRING_BUFLEN - 1) {
        dom = virDomainLookupByUUIDString(handle_.get(), key.c_str());
    }
    if (!dom) {
        Error e = libvirt_error("vm '" + key + "'");
        if (e.kind() == ErrorKind::not_found) {
            return fail(ErrorKind::not_found, "vm '" + key + "' not found on " + uri() +
                                                  " (`vmshadow vm list` lists VMs)");
        }
        return fail(e);
    }
    return Domain(DomainHandle(dom));
}

Result<std::vector<Domain>> Connection::list_domains() const {
    virDomainPtr* doms = nullptr;
    int n = virConnectListAllDomains(handle_.get(), &doms, 0);
    if (n < 0) return fail(libvirt_error("list VMs on " + uri()));
    std::vector<Domain> out;
    out.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) out.emplace_back(DomainHandle(doms[i]));
    free(doms);
    std::sort(out.begin(), out.end(),
              [](const Domain& a, const Domain& b) { return a.name() < b.name(); });
    return out;
}

Result<Domain> Connection::define(const std::string& xml) const {
    virDomainPtr dom = virDomainDefineXML(handle_.get(), xml.c_str());
    if (!dom) return fail(libvirt_error("define VM"));
    return Domain(DomainHandle(dom));
}

Result<bool> Connection::network_exists(std::string_view name, bool* active) const {
    std::string key(name);
    NetworkHandle net(virNetworkLookupByName(handle_.get(), key.c_str()));
    if (!net) {
        Error e = libvirt_error("network '" + key + "'");
        if (e.kind() == ErrorKind::not_found) return false;
        return fail(e);
    }
    if (active) *active = virNetworkIsActive(net.get()) == 1;
    return true;
}

}  // namespace vmshadow::virt
