// SPDX-License-Identifier: MIT
#pragma once
// Owning handles for libvirt objects: unique_ptr with the matching virXxxFree as deleter,
// so every connection, domain and checkpoint reference is released on every path.

#include <libvirt/libvirt.h>

#include <memory>

namespace vmshadow::virt {

struct ConnectFree {
    void operator()(virConnectPtr p) const { virConnectClose(p); }
};
struct DomainFree {
    void operator()(virDomainPtr p) const { virDomainFree(p); }
};
struct CheckpointFree {
    void operator()(virDomainCheckpointPtr p) const { virDomainCheckpointFree(p); }
};
struct NetworkFree {
    void operator()(virNetworkPtr p) const { virNetworkFree(p); }
};

using ConnectHandle = std::unique_ptr<virConnect, ConnectFree>;
using DomainHandle = std::unique_ptr<virDomain, DomainFree>;
using CheckpointHandle = std::unique_ptr<virDomainCheckpoint, CheckpointFree>;
using NetworkHandle = std::unique_ptr<virNetwork, NetworkFree>;

// Frees a string or array libvirt allocated for us.
struct LibcFree {
    void operator()(void* p) const { free(p); }
};
using CString = std::unique_ptr<char, LibcFree>;

}  // namespace vmshadow::virt
