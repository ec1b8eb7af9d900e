// SPDX-License-Identifier: MIT
#include "vmwriter/vm_facts.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

#include "virt/guest_agent.h"

namespace vmshadow::vmwriter {
namespace {

bool source_missing(const virt::DiskSpec& spec) {
    if (spec.path.empty()) return false;  // network disk or empty drive
    if (spec.source_type != "file" && spec.source_type != "block") return false;
    struct stat st {};
    return ::stat(spec.path.c_str(), &st) != 0 && errno == ENOENT;
}

DiskFacts disk_facts(const virt::Domain& domain, const virt::DiskSpec& spec) {
    DiskFacts d;
    d.spec = spec;
    d.backed_up = virt::disk_is_backed_up(spec, &d.skip_reason);
    d.source_missing = source_missing(spec);
    if (!spec.path.empty() && !d.source_missing) {
        auto sizes = domain.block_info(spec.target);
        if (sizes) {
            d.sizes = *sizes;
        } else {
            d.size_error = sizes.error().message();
        }
    }
    return d;
}

AgentFacts agent_facts(const virt::Domain& domain, const virt::DomainDescription& desc,
                       virt::DomainState state, std::chrono::seconds timeout) {
    AgentFacts a;
    a.channel = desc.agent_channel.has_value();
    if (!a.channel) return a;
    a.channel_state = desc.agent_channel->state;
    if (state != virt::DomainState::running || a.channel_state == "disconnected") return a;
    virt::GuestAgent agent(domain, timeout);
    if (auto ping = agent.ping(); !ping) {
        a.error = ping.error().message();
        return a;
    }
    a.answering = true;
    auto fs = agent.filesystems();
    if (fs) {
        a.filesystems = std::move(*fs);
    } else {
        a.answering = false;
        a.error = fs.error().message();
    }
    return a;
}

ScratchFacts scratch_facts(const std::string& dir) {
    ScratchFacts s;
    s.dir = dir;
    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) != 0) {
        s.error =
            dir + ": " + std::strerror(errno) + " (create it or choose another with --scratch-dir)";
        return s;
    }
    s.free_bytes = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    return s;
}

}  // namespace

Result<VmFacts> gather_facts(const virt::Domain& domain, const FactOptions& options) {
    VmFacts f;
    f.name = domain.name();
    auto state = domain.state();
    if (!state) return fail(state.error());
    f.state = *state;
    auto desc = domain.describe();
    if (!desc) return fail(desc.error());
    for (const auto& spec : desc->disks) f.disks.push_back(disk_facts(domain, spec));
    f.boot = desc->boot;
    f.agent = agent_facts(domain, *desc, f.state, options.agent_timeout);
    f.scratch = scratch_facts(options.scratch_dir);
    f.scratch.needed_bytes = scratch_needed(f.disks);
    return f;
}

}  // namespace vmshadow::vmwriter
