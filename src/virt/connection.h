// SPDX-License-Identifier: MIT
#pragma once
// Connection: an open libvirt connection (RAII) and the lookups vmshadow makes through it.
//
// This module is: opening the connection named by --connect, $LIBVIRT_DEFAULT_URI or
// libvirt's default, and finding domains and networks. It is not: anything about one domain
// (see domain.h). A Connection is movable, not copyable; one thread at a time.

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "virt/domain.h"
#include "virt/handles.h"

namespace vmshadow::virt {

class Connection {
  public:
    // Opens `uri`; an empty uri lets libvirt choose ($LIBVIRT_DEFAULT_URI, then its default).
    // Fails with `unavailable` and a hint when libvirtd does not answer.
    static Result<Connection> open(const std::string& uri);

    // The URI libvirt actually connected to (e.g. "qemu:///system").
    std::string uri() const;

    // Finds a domain by name or UUID. not_found names the VM and says how to list VMs.
    Result<Domain> lookup(std::string_view name_or_uuid) const;

    // Every defined or running domain, sorted by name.
    Result<std::vector<Domain>> list_domains() const;

    // Defines (persistently) a domain from XML.
    Result<Domain> define(const std::string& xml) const;

    // Whether a libvirt network of that name exists (and is active, in `active`).
    Result<bool> network_exists(std::string_view name, bool* active = nullptr) const;

    virConnectPtr raw() const { return handle_.get(); }

  private:
    explicit Connection(ConnectHandle handle) : handle_(std::move(handle)) {}
    ConnectHandle handle_;
};

}  // namespace vmshadow::virt
