// SPDX-License-Identifier: MIT
#include "engine/checkpoint_session.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "engine/checkpoint_ops.h"
#include "virt/domain_xml.h"
#include "virt/shadow_job.h"
#include "vmwriter/domain_rewrite.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;

std::string describe_disks(const std::vector<CheckpointDisk>& disks) {
    std::string out;
    for (const auto& d : disks) out += (out.empty() ? "" : ", ") + d.target + " " + d.image;
    return out.empty() ? "none" : out;
}

bool same_disks(const std::vector<CheckpointDisk>& a, const std::vector<CheckpointDisk>& b) {
    if (a.size() != b.size()) return false;
    for (const auto& d : a) {
        auto it = std::find_if(b.begin(), b.end(),
                               [&](const CheckpointDisk& e) { return e.target == d.target; });
        if (it == b.end() ||
            fs::path(it->image).lexically_normal() != fs::path(d.image).lexically_normal())
            return false;
    }
    return true;
}

}  // namespace

Result<std::vector<CheckpointDisk>> checkpointable_disks(const std::string& domain_xml,
                                                         const std::string& vm) {
    auto desc = virt::parse_domain_xml(domain_xml);
    if (!desc) return fail(desc.error());
    std::vector<CheckpointDisk> out;
    for (const auto& d : desc->disks) {
        if (!virt::disk_is_backed_up(d)) continue;
        if (d.source_type != "file" || d.path.empty())
            return fail(ErrorKind::unsupported,
                        "vm '" + vm + "': disk " + d.target + " is a " + d.source_type +
                            " disk: checkpoints need file-backed disks (qcow2 or raw files)");
        out.push_back({d.target, fs::absolute(d.path).lexically_normal().string()});
    }
    if (out.empty())
        return fail(ErrorKind::unsupported, "vm '" + vm + "' has no disk a checkpoint could hold");
    return out;
}

Result<CheckpointSession> open_checkpoint_session(virt::Connection& connection,
                                                  const std::string& vm,
                                                  const std::string& operation) {
    auto domain = connection.lookup(vm);
    if (!domain) return fail(domain.error());
    if (!domain->is_persistent())
        return fail(ErrorKind::unsupported,
                    domain->label() + " is transient: checkpoints need a defined (persistent) VM");
    auto lock = VmLock::acquire({{domain->name(), domain->uuid()}}, operation);
    if (!lock) return fail(lock.error());
    auto state = domain->state();
    if (!state) return fail(state.error());
    auto tree = load_checkpoint_tree(domain->uuid());
    if (!tree) return fail(tree.error());
    tree->vm_name = domain->name();

    bool running = *state == virt::DomainState::running || *state == virt::DomainState::paused;
    auto xml = domain->xml(running ? virt::XmlFlavor::live : virt::XmlFlavor::inactive);
    if (!xml) return fail(xml.error());
    auto disks = checkpointable_disks(*xml, domain->name());
    if (!disks) return fail(disks.error());
    if (tree->checkpoints.empty()) {
        tree->active = *disks;
    } else if (!same_disks(tree->active, *disks)) {
        return fail(ErrorKind::conflict, domain->label() +
                                             ": its disks changed outside vmshadow since its last "
                                             "checkpoint operation (the record has " +
                                             describe_disks(tree->active) + "; the VM uses " +
                                             describe_disks(*disks) +
                                             "): put them back, or remove " +
                                             checkpoint_folder(domain->uuid()).string() +
                                             " to forget its checkpoints (their images stay)");
    }
    return CheckpointSession{std::move(*domain), std::move(*lock), std::move(*tree), *state};
}

Status refuse_if_shadowed(const virt::Domain& domain, const std::string& operation) {
    auto shadow = virt::shadow_holding_backup_job(domain);
    if (!shadow) return fail(shadow.error().with_context(domain.label() + ": " + operation));
    if (!*shadow) return {};
    return fail(ErrorKind::conflict,
                domain.label() + ": " + operation + " refused: shadow copy " + **shadow +
                    " holds this VM's backup job (libvirt allows one per VM, and a checkpoint "
                    "changes the disks' files under it): delete it with `vmshadow shadow "
                    "delete " +
                    **shadow + "` and retry");
}

std::string new_overlay_path(const std::string& image) {
    static const std::regex kNowSuffix(R"(\.now-[0-9a-f]{8}$)");
    fs::path p(image);
    std::string stem = std::regex_replace(p.stem().string(), kNowSuffix, "");
    std::random_device rd;
    std::uniform_int_distribution<std::uint32_t> dist;
    for (;;) {
        char suffix[9];
        std::snprintf(suffix, sizeof suffix, "%08x", dist(rd));
        fs::path candidate = p.parent_path() / (stem + ".now-" + suffix + ".qcow2");
        std::error_code ec;
        if (!fs::exists(candidate, ec)) return candidate.string();
    }
}

Status check_new_checkpoint_name(const CheckpointTree& tree, const std::string& name) {
    const std::string vm = tree.vm_name;
    if (name.empty() || name.size() > 100)
        return fail(ErrorKind::invalid_argument, "a checkpoint name has 1 to 100 characters ('" +
                                                     name + "' has " + std::to_string(name.size()) +
                                                     ")");
    for (unsigned char c : name)
        if (c < 0x20 || c == 0x7f)
            return fail(ErrorKind::invalid_argument,
                        "a checkpoint name has no control characters (tabs, newlines)");
    try {
        (void)nlohmann::json(name).dump();  // throws on text that is not UTF-8
    } catch (const nlohmann::json::exception&) {
        return fail(ErrorKind::invalid_argument, "a checkpoint name is UTF-8 text");
    }
    for (const auto& c : tree.checkpoints) {
        if (c.name == name)
            return fail(ErrorKind::conflict, "vm '" + vm + "' has a checkpoint named '" + name +
                                                 "' already: choose another name");
        if (c.id == name)
            return fail(ErrorKind::conflict, "'" + name + "' is the id of checkpoint '" + c.name +
                                                 "' of vm '" + vm + "': choose another name");
    }
    return {};
}

Result<std::string> domain_xml_on_images(const std::string& xml,
                                         const std::vector<CheckpointDisk>& disks) {
    vmwriter::DomainRewriteSpec spec;
    for (const auto& d : disks) spec.disks[d.target] = {d.image, "qcow2", ""};
    // NICs stay as they were: this is the same VM on the same host.
    spec.network_exists = [](const std::string&) { return true; };
    spec.bridge_exists = [](const std::string&) { return true; };
    auto rewritten = vmwriter::rewrite_domain_xml(xml, spec);
    if (!rewritten) return fail(rewritten.error());
    return rewritten->xml;
}

}  // namespace vmshadow::engine
