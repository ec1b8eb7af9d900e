// SPDX-License-Identifier: MIT
#include "virt/domain.h"

#include "common/enum_names.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {

std::string_view state_name(DomainState state) {
    static constexpr auto kNames = enum_names<DomainState>(
        {
            {DomainState::nostate, "nostate"},
            {DomainState::running, "running"},
            {DomainState::blocked, "blocked"},
            {DomainState::paused, "paused"},
            {DomainState::shutdown, "shutdown"},
            {DomainState::shutoff, "shutoff"},
            {DomainState::crashed, "crashed"},
            {DomainState::pmsuspended, "pmsuspended"},
        },
        "nostate");
    return kNames.name(state);
}

Domain::Domain(DomainHandle handle) : handle_(std::move(handle)) {
    const char* n = virDomainGetName(handle_.get());
    name_ = n ? n : "";
}

std::string Domain::label() const {
    return "vm '" + name_ + "'";
}

std::string Domain::uuid() const {
    char buf[VIR_UUID_STRING_BUFLEN] = {};
    if (virDomainGetUUIDString(handle_.get(), buf) < 0) return {};
    return buf;
}

bool Domain::is_persistent() const {
    return virDomainIsPersistent(handle_.get()) == 1;
}

Result<DomainState> Domain::state() const {
    int state = 0;
    int reason = 0;
    if (virDomainGetState(handle_.get(), &state, &reason, 0) < 0) {
        return fail(libvirt_error(label() + ": read state"));
    }
    switch (state) {
        case VIR_DOMAIN_RUNNING:
            return DomainState::running;
        case VIR_DOMAIN_BLOCKED:
            return DomainState::blocked;
        case VIR_DOMAIN_PAUSED:
            return DomainState::paused;
        case VIR_DOMAIN_SHUTDOWN:
            return DomainState::shutdown;
        case VIR_DOMAIN_SHUTOFF:
            return DomainState::shutoff;
        case VIR_DOMAIN_CRASHED:
            return DomainState::crashed;
        case VIR_DOMAIN_PMSUSPENDED:
            return DomainState::pmsuspended;
        default:
            return DomainState::nostate;
    }
}

Result<std::string> Domain::xml(XmlFlavor flavor) const {
    unsigned flags = flavor == XmlFlavor::inactive ? VIR_DOMAIN_XML_INACTIVE : 0;
    CString text(virDomainGetXMLDesc(handle_.get(), flags));
    if (!text) return fail(libvirt_error(label() + ": read domain XML"));
    return std::string(text.get());
}

Result<DomainDescription> Domain::describe() const {
    auto text = xml(XmlFlavor::live);
    if (!text) return fail(text.error());
    return with_context(parse_domain_xml(*text), label());
}

Result<BlockInfo> Domain::block_info(std::string_view target) const {
    virDomainBlockInfo info{};
    std::string disk(target);
    if (virDomainGetBlockInfo(handle_.get(), disk.c_str(), &info, 0) < 0) {
        return fail(libvirt_error(label() + ": disk " + disk));
    }
    return BlockInfo{info.capacity, info.allocation, info.physical};
}

}  // namespace vmshadow::virt
