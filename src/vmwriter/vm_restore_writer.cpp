// SPDX-License-Identifier: MIT
#include "vmwriter/vm_restore_writer.h"

#include "common/test_hook.h"
#include "virt/lifecycle.h"

namespace vmshadow::vmwriter {

VmRestoreWriter::VmRestoreWriter(const virt::Connection& connection, VmRestoreTarget target)
    : connection_(connection), target_(std::move(target)) {}

std::expected<vss::WriterMetadata, vss::Veto> VmRestoreWriter::identify(vss::EventContext&) {
    vss::WriterMetadata m;
    m.writer_id = target_.component.writer_id;
    m.writer_name = name();
    m.restore_method = vss::RestoreMethod::stop_restore_start;
    vss::Component c;
    c.logical_path = target_.component.logical_path;
    c.name = target_.component.name;
    c.caption = "VM " + target_.name;
    m.components.push_back(std::move(c));
    return m;
}

vss::WriterResult VmRestoreWriter::pre_restore(vss::EventContext&) {
    auto existing = connection_.lookup(target_.name);
    if (!existing) {
        if (existing.error().kind() == ErrorKind::not_found) return {};
        return std::unexpected(vss::veto_from(existing.error()));
    }
    if (!target_.replace) {
        return std::unexpected(vss::veto_nonretryable(
            "a VM named '" + target_.name +
            "' exists: add --replace to replace it, or restore with --as NEW-NAME"));
    }
    auto xml = existing->xml(virt::XmlFlavor::inactive);
    if (!xml) return std::unexpected(vss::veto_from(xml.error()));
    auto state = existing->state();
    removed_was_running_ = state && *state == virt::DomainState::running;
    // Stopped, but still defined: the engine's journalled swap replaces the definition in one
    // step (engine/restore_journal.h), so the VM is never undefined.
    if (auto st = virt::destroy_domain(*existing); !st)
        return std::unexpected(vss::veto_from(st.error()));
    removed_xml_ = std::move(*xml);
    outcome_.removed_existing = true;
    return {};
}

vss::WriterResult VmRestoreWriter::post_restore(vss::EventContext& context) {
    vss::FileRestoreStatus status = vss::FileRestoreStatus::none;
    for (const auto& e : context.components)
        if (e.key == target_.component) status = e.file_restore_status;
    if (status == vss::FileRestoreStatus::none || status == vss::FileRestoreStatus::undefined) {
        if (!removed_xml_) return {};
        // Nothing was replaced: the old VM runs again if it ran (and is defined again, should
        // its definition have gone).
        auto back = connection_.lookup(target_.name);
        if (!back && back.error().kind() == ErrorKind::not_found)
            back = connection_.define(*removed_xml_);
        if (!back) return std::unexpected(vss::veto_from(back.error()));
        outcome_.put_back = true;
        auto now = back->state();
        bool running =
            now && (*now == virt::DomainState::running || *now == virt::DomainState::paused);
        if (removed_was_running_ && !running) {
            if (auto st = virt::start_domain(*back); !st)
                return std::unexpected(vss::veto_nonretryable(
                    "VM '" + target_.name + "' was defined again but did not start (" +
                    st.error().message() + "): start it with `virsh start " + target_.name + "`"));
        }
        return {};
    }
    if (status == vss::FileRestoreStatus::failed) {
        return std::unexpected(vss::veto_nonretryable(
            "the files of VM '" + target_.name +
            "' were only partly restored: it was not defined; run the restore again"));
    }
    auto domain = connection_.define(target_.xml);
    if (!domain) {
        return std::unexpected(vss::veto_nonretryable("define VM '" + target_.name +
                                                      "': " + domain.error().message()));
    }
    outcome_.defined = true;
    test_kill_point("defined");
    if (target_.memory_file) {
        if (auto st =
                virt::restore_saved_state(connection_, *target_.memory_file, std::nullopt, true);
            !st) {
            return std::unexpected(vss::veto_nonretryable(
                "VM '" + target_.name + "' was defined but its saved state did not resume (" +
                st.error().message() + "): start it with `virsh start " + target_.name + "`"));
        }
        outcome_.resumed = true;
    } else if (target_.start) {
        if (auto st = virt::start_domain(*domain); !st) {
            return std::unexpected(vss::veto_nonretryable(
                "VM '" + target_.name +
                "' was restored and defined but did not start: " + st.error().message()));
        }
        outcome_.started = true;
    }
    return {};
}

}  // namespace vmshadow::vmwriter
