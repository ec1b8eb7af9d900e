// SPDX-License-Identifier: MIT
#pragma once
// Domain: one libvirt domain (RAII reference) and what vmshadow asks of it directly:
// state, XML, disks and their sizes. Guest agent calls are in guest_agent.h; freezing is in
// freeze_guard.h. Errors name the VM and the operation.
//
// A Domain is movable, not copyable; one thread at a time.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"
#include "virt/domain_xml.h"
#include "virt/handles.h"

namespace vmshadow::virt {

// libvirt's domain states, named as libvirt/virsh name them ("running", "shut off" is
// "shutoff" as in the JSON of `vmshadow vm list`).
enum class DomainState {
    nostate,
    running,
    blocked,
    paused,
    shutdown,
    shutoff,
    crashed,
    pmsuspended
};

std::string_view state_name(DomainState state);

struct BlockInfo {
    std::uint64_t capacity = 0;    // virtual size seen by the guest
    std::uint64_t allocation = 0;  // bytes the image uses on the host
    std::uint64_t physical = 0;    // size of the file or device on the host
};

enum class XmlFlavor { live, inactive };

class Domain {
  public:
    explicit Domain(DomainHandle handle);

    const std::string& name() const { return name_; }
    std::string uuid() const;
    bool is_persistent() const;

    Result<DomainState> state() const;
    // The domain XML; `inactive` is the persistent definition (what a restore redefines).
    Result<std::string> xml(XmlFlavor flavor = XmlFlavor::live) const;
    Result<DomainDescription> describe() const;

    // Sizes of one disk (by target, e.g. "vda"). Works for running and shut-off VMs.
    Result<BlockInfo> block_info(std::string_view target) const;

    virDomainPtr raw() const { return handle_.get(); }

    // "vm 'NAME'", the prefix every error about this VM carries.
    std::string label() const;

  private:
    DomainHandle handle_;
    std::string name_;
};

}  // namespace vmshadow::virt
