// SPDX-License-Identifier: MIT
#include "vmwriter/backup_plan.h"

namespace vmshadow::vmwriter {

const PlannedDisk* VmBackupPlan::disk(std::string_view target) const {
    for (const auto& d : disks)
        if (d.target == target) return &d;
    return nullptr;
}

nlohmann::json plan_to_json(const VmBackupPlan& plan) {
    nlohmann::json disks = nlohmann::json::array();
    for (const auto& d : plan.disks) {
        disks.push_back({{"target", d.target},
                         {"path", d.path},
                         {"format", d.format},
                         {"size", d.size},
                         {"incremental", d.incremental},
                         {"full_reason", d.full_reason}});
    }
    nlohmann::json skipped = nlohmann::json::array();
    for (const auto& s : plan.skipped)
        skipped.push_back({{"target", s.target}, {"reason", s.reason}});
    nlohmann::json out{{"method", method_name(plan.method)},
                       {"reasons", plan.reasons},
                       {"disks", disks},
                       {"skipped", skipped},
                       {"chain_notes", plan.chain_notes},
                       {"memory_file", plan.memory_file}};
    out["incremental_from"] =
        plan.incremental_from ? nlohmann::json(*plan.incremental_from) : nlohmann::json();
    out["new_checkpoint"] =
        plan.new_checkpoint ? nlohmann::json(*plan.new_checkpoint) : nlohmann::json();
    return out;
}

Result<VmBackupPlan> plan_from_json(const nlohmann::json& in) {
    try {
        VmBackupPlan plan;
        auto method = parse_method(in.at("method").get<std::string>());
        if (!method) return fail(ErrorKind::corruption, "backup plan: unknown method");
        plan.method = *method;
        plan.reasons = in.at("reasons").get<std::vector<std::string>>();
        for (const auto& d : in.at("disks")) {
            plan.disks.push_back(
                {d.at("target").get<std::string>(), d.at("path").get<std::string>(),
                 d.at("format").get<std::string>(), d.at("size").get<std::uint64_t>(),
                 d.at("incremental").get<bool>(), d.at("full_reason").get<std::string>()});
        }
        for (const auto& s : in.at("skipped"))
            plan.skipped.push_back(
                {s.at("target").get<std::string>(), s.at("reason").get<std::string>()});
        plan.chain_notes = in.at("chain_notes").get<std::vector<std::string>>();
        plan.memory_file = in.at("memory_file").get<std::string>();
        if (!in.at("incremental_from").is_null())
            plan.incremental_from = in.at("incremental_from").get<std::string>();
        if (!in.at("new_checkpoint").is_null())
            plan.new_checkpoint = in.at("new_checkpoint").get<std::string>();
        return plan;
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::corruption, std::string("backup plan: ") + e.what());
    }
}

Result<VmBackupPlan> parse_plan(std::string_view text) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) return fail(ErrorKind::corruption, "backup plan: not JSON");
    return plan_from_json(j);
}

}  // namespace vmshadow::vmwriter
