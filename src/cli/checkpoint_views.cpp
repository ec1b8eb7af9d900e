// SPDX-License-Identifier: MIT
#include "cli/checkpoint_views.h"

#include <ctime>

#include "common/time_format.h"

namespace vmshadow::cli {
namespace {

void render_children(const engine::CheckpointTree& tree, const std::string& parent,
                     const std::string& indent, std::string& out) {
    struct Line {
        const engine::Checkpoint* checkpoint;  // nullptr: "Now"
    };
    std::vector<Line> lines;
    if (tree.current == parent) lines.push_back({nullptr});
    for (const auto* c : engine::checkpoint_children(tree, parent)) lines.push_back({c});
    for (std::size_t i = 0; i < lines.size(); ++i) {
        bool last = i + 1 == lines.size();
        out += indent + (last ? "└─ " : "├─ ");
        const auto* c = lines[i].checkpoint;
        if (!c) {
            out += "Now\n";
            continue;
        }
        out += c->name + "  (" + std::string(engine::checkpoint_type_name(c->type)) + ", " +
               local_minute(c->created) + ", " + c->consistency + ")";
        if (c->delete_unfinished)
            out += "  [delete unfinished: run `" + engine::finish_delete_command(tree, *c) +
                   "` again; do not apply]";
        out += "\n";
        render_children(tree, c->id, indent + (last ? "   " : "│  "), out);
    }
}

}  // namespace

std::string local_minute(std::int64_t unix_seconds) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
    return buf;
}

std::string render_checkpoint_tree(const engine::CheckpointTree& tree) {
    std::string out = (tree.vm_name.empty() ? tree.vm_uuid : tree.vm_name) + "\n";
    render_children(tree, "", "", out);
    return out;
}

nlohmann::json checkpoint_json(const engine::Checkpoint& c) {
    nlohmann::json disks = nlohmann::json::array();
    for (const auto& d : c.disks) disks.push_back({{"target", d.target}, {"image", d.image}});
    nlohmann::json out{{"id", c.id},
                       {"name", c.name},
                       {"type", std::string(engine::checkpoint_type_name(c.type))},
                       {"created", iso8601_utc(c.created)},
                       {"parent", c.parent.empty() ? nlohmann::json() : nlohmann::json(c.parent)},
                       {"consistency", c.consistency},
                       {"disks", disks}};
    if (!c.note.empty()) out["note"] = c.note;
    out["delete_unfinished"] = c.delete_unfinished;
    if (!c.memory_file.empty()) out["memory_file"] = c.memory_file;
    return out;
}

nlohmann::json checkpoint_tree_json(const engine::CheckpointTree& tree) {
    nlohmann::json checkpoints = nlohmann::json::array();
    for (const auto& c : tree.checkpoints) checkpoints.push_back(checkpoint_json(c));
    nlohmann::json now_disks = nlohmann::json::array();
    for (const auto& d : tree.active)
        now_disks.push_back({{"target", d.target}, {"image", d.image}});
    auto current = tree.current.empty() ? nlohmann::json() : nlohmann::json(tree.current);
    nlohmann::json out{{"vm", tree.vm_name},
                       {"vm_uuid", tree.vm_uuid},
                       {"current", current},
                       {"now", {{"parent", current}, {"disks", now_disks}}},
                       {"checkpoints", checkpoints}};
    if (tree.tracking_reset_at != 0) {
        out["tracking_reset_at"] = iso8601_utc(tree.tracking_reset_at);
        out["tracking_reset_reason"] = tree.tracking_reset_reason;
    }
    return out;
}

}  // namespace vmshadow::cli
