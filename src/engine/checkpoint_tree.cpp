// SPDX-License-Identifier: MIT
// The checkpoint record: its JSON form (version 1), its file, and pure queries on the tree.
//
// tree.json, version 1 (field names never change; unknown fields are ignored):
//   { "version": 1, "vm_uuid": "...", "vm_name": "...", "current": "<id>|",
//     "active": [ {"target": "vda", "image": "/abs/path.qcow2"} ],
//     "tracking_reset_at": <unix s>, "tracking_reset_reason": "...",
//     "checkpoints": [ { "id", "name", "type": "production|standard", "created", "parent",
//                        "consistency", "note", "delete_unfinished": bool (absent: false),
//                        "disks": [...], "memory_file", "domain_xml" } ] }
#include "engine/checkpoint_tree.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "common/atomic_file.h"

namespace vmshadow::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::size_t kMaxNameLength = 100;
constexpr std::string_view kOldUnfinishedDeleteNote = "deleting it stopped part-way";
// A record is small (XML per checkpoint): a file far past this is not ours.
constexpr std::uintmax_t kMaxRecordBytes = 64ULL * 1024 * 1024;

fs::path checkpoint_root() {
    const char* env = std::getenv("VMSHADOW_CHECKPOINT_DIR");
    return (env && *env) ? fs::path(env) : fs::path(kDefaultCheckpointDir);
}

bool is_checkpoint_id(std::string_view id) {
    return id.size() == 8 && std::all_of(id.begin(), id.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

bool is_valid_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxNameLength) return false;
    // Printable: no control characters (bytes ≥ 0x80 are UTF-8 and allowed).
    return std::none_of(name.begin(), name.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

json disks_to_json(const std::vector<CheckpointDisk>& disks) {
    json out = json::array();
    for (const auto& d : disks) out.push_back({{"target", d.target}, {"image", d.image}});
    return out;
}

std::vector<CheckpointDisk> disks_from_json(const json& j) {
    std::vector<CheckpointDisk> out;
    for (const auto& d : j)
        out.push_back({d.at("target").get<std::string>(), d.at("image").get<std::string>()});
    return out;
}

// The first broken invariant of checkpoint_tree.h, or empty.
std::string broken_invariant(const CheckpointTree& tree) {
    std::set<std::string> ids, names;
    std::set<std::string> targets;
    for (const auto& d : tree.active) targets.insert(d.target);
    if (targets.size() != tree.active.size()) return "two active images for one disk";
    for (const auto& c : tree.checkpoints) {
        if (!is_checkpoint_id(c.id)) return "checkpoint id '" + c.id + "' is not 8 hex digits";
        if (!ids.insert(c.id).second) return "checkpoint id '" + c.id + "' appears twice";
        if (!is_valid_name(c.name)) return "checkpoint " + c.id + " has an invalid name";
        if (!names.insert(c.name).second) return "checkpoint name '" + c.name + "' appears twice";
        std::set<std::string> own;
        for (const auto& d : c.disks) own.insert(d.target);
        if (own != targets || c.disks.size() != tree.active.size())
            return "checkpoint '" + c.name + "' does not have one image per disk of the VM";
    }
    for (const auto& c : tree.checkpoints) {
        if (ids.contains(c.name) && c.name != c.id)
            return "checkpoint name '" + c.name + "' is the id of another checkpoint";
        if (!c.parent.empty() && !ids.contains(c.parent))
            return "checkpoint '" + c.name + "' has a parent (" + c.parent + ") not in the tree";
    }
    if (!tree.current.empty() && !ids.contains(tree.current))
        return "current checkpoint " + tree.current + " is not in the tree";
    std::map<std::string, std::string> parent_of;
    for (const auto& c : tree.checkpoints) parent_of[c.id] = c.parent;
    for (const auto& c : tree.checkpoints) {
        // Walking up more steps than there are checkpoints means a cycle.
        std::string at = c.id;
        for (std::size_t steps = 0; !at.empty(); ++steps) {
            if (steps > tree.checkpoints.size())
                return "checkpoint '" + c.name + "' is its own ancestor";
            at = parent_of[at];
        }
    }
    return {};
}

CheckpointTree tree_from_json(const json& j) {
    CheckpointTree t;
    t.vm_uuid = j.at("vm_uuid").get<std::string>();
    t.vm_name = j.value("vm_name", "");
    t.current = j.value("current", "");
    t.active = disks_from_json(j.value("active", json::array()));
    t.tracking_reset_at = j.value("tracking_reset_at", std::int64_t{0});
    t.tracking_reset_reason = j.value("tracking_reset_reason", "");
    for (const auto& c : j.value("checkpoints", json::array())) {
        Checkpoint cp;
        cp.id = c.at("id").get<std::string>();
        cp.name = c.at("name").get<std::string>();
        auto type = parse_checkpoint_type(c.at("type").get<std::string>());
        if (!type) throw std::invalid_argument("checkpoint '" + cp.name + "' has an unknown type");
        cp.type = *type;
        cp.created = c.value("created", std::int64_t{0});
        cp.parent = c.value("parent", "");
        cp.consistency = c.value("consistency", "");
        cp.note = c.value("note", "");
        // Records of a vmshadow before the flag said so only in the note.
        cp.delete_unfinished =
            c.value("delete_unfinished", false) || cp.note.starts_with(kOldUnfinishedDeleteNote);
        cp.disks = disks_from_json(c.value("disks", json::array()));
        cp.memory_file = c.value("memory_file", "");
        cp.domain_xml = c.value("domain_xml", "");
        t.checkpoints.push_back(std::move(cp));
    }
    return t;
}

int depth_of(const CheckpointTree& tree, const std::string& id) {
    int depth = 0;
    for (std::string at = id; !at.empty(); ++depth) {
        auto it = std::find_if(tree.checkpoints.begin(), tree.checkpoints.end(),
                               [&](const Checkpoint& c) { return c.id == at; });
        if (it == tree.checkpoints.end()) break;
        at = it->parent;
    }
    return depth;
}

}  // namespace

std::string_view checkpoint_type_name(CheckpointType type) {
    return type == CheckpointType::standard ? "standard" : "production";
}

std::optional<CheckpointType> parse_checkpoint_type(std::string_view text) {
    if (text == "production") return CheckpointType::production;
    if (text == "standard") return CheckpointType::standard;
    return std::nullopt;
}

fs::path checkpoint_folder(const std::string& vm_uuid) {
    return checkpoint_root() / vm_uuid;
}

std::string checkpoint_tree_to_json(const CheckpointTree& tree) {
    json cps = json::array();
    for (const auto& c : tree.checkpoints)
        cps.push_back({{"id", c.id},
                       {"name", c.name},
                       {"type", std::string(checkpoint_type_name(c.type))},
                       {"created", c.created},
                       {"parent", c.parent},
                       {"consistency", c.consistency},
                       {"note", c.note},
                       {"delete_unfinished", c.delete_unfinished},
                       {"disks", disks_to_json(c.disks)},
                       {"memory_file", c.memory_file},
                       {"domain_xml", c.domain_xml}});
    json j{{"version", kCheckpointTreeVersion},
           {"vm_uuid", tree.vm_uuid},
           {"vm_name", tree.vm_name},
           {"current", tree.current},
           {"active", disks_to_json(tree.active)},
           {"tracking_reset_at", tree.tracking_reset_at},
           {"tracking_reset_reason", tree.tracking_reset_reason},
           {"checkpoints", std::move(cps)}};
    // Names are checked to be UTF-8 when made; anything else is replaced, never thrown.
    return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<CheckpointTree> checkpoint_tree_from_json(std::string_view text, const std::string& source) {
    auto damaged = [&](const std::string& why) {
        return fail(ErrorKind::corruption,
                    "the checkpoint record " + source + " is damaged (" + why +
                        "): look at it and put it right by hand, or remove it to forget the "
                        "VM's checkpoints (their images stay)");
    };
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return damaged("not a JSON object");
    auto version = j.find("version");
    if (version == j.end() || !version->is_number_integer()) return damaged("no version");
    if (version->get<int>() != kCheckpointTreeVersion)
        return fail(ErrorKind::unsupported,
                    "the checkpoint record " + source + " has version " +
                        std::to_string(version->get<int>()) + "; this vmshadow reads version " +
                        std::to_string(kCheckpointTreeVersion) + ": use a newer vmshadow");
    CheckpointTree tree;
    try {
        tree = tree_from_json(j);
    } catch (const std::exception& e) {
        // A missing field or one of the wrong type: damaged like unparsable text.
        return damaged(e.what());
    }
    if (auto why = broken_invariant(tree); !why.empty()) return damaged(why);
    return tree;
}

Result<CheckpointTree> load_checkpoint_tree(const std::string& vm_uuid) {
    fs::path path = checkpoint_folder(vm_uuid) / "tree.json";
    std::error_code ec;
    auto size = fs::file_size(path, ec);
    if (ec) {
        if (ec == std::errc::no_such_file_or_directory) {
            CheckpointTree empty;
            empty.vm_uuid = vm_uuid;
            return empty;
        }
        return fail(ErrorKind::io,
                    "read the checkpoint record " + path.string() + ": " + ec.message());
    }
    if (size > kMaxRecordBytes)
        return fail(ErrorKind::corruption, "the checkpoint record " + path.string() +
                                               " is too large to be one (" + std::to_string(size) +
                                               " bytes)");
    std::ifstream in(path, std::ios::binary);
    if (!in.is_open()) return fail(ErrorKind::io, "read the checkpoint record " + path.string());
    std::stringstream text;
    text << in.rdbuf();
    auto tree = checkpoint_tree_from_json(text.str(), path.string());
    if (tree && tree->vm_uuid != vm_uuid)
        return fail(ErrorKind::corruption, "the checkpoint record " + path.string() +
                                               " belongs to VM " + tree->vm_uuid + ", not " +
                                               vm_uuid);
    return tree;
}

Status save_checkpoint_tree(const CheckpointTree& tree) {
    if (tree.vm_uuid.empty())
        return fail(ErrorKind::internal, "save a checkpoint record without a VM uuid");
    if (auto why = broken_invariant(tree); !why.empty())
        return fail(ErrorKind::internal,
                    "refused to save a checkpoint record of VM '" + tree.vm_name + "': " + why);
    fs::path path = checkpoint_folder(tree.vm_uuid) / "tree.json";
    if (auto st = write_file_atomically(path, checkpoint_tree_to_json(tree), 0600); !st)
        return std::unexpected(st.error().with_context("write the checkpoint record"));
    return {};
}

Status remove_checkpoint_tree(const std::string& vm_uuid) {
    if (vm_uuid.empty())
        return fail(ErrorKind::internal, "remove a checkpoint record without a uuid");
    std::error_code ec;
    fs::remove_all(checkpoint_folder(vm_uuid), ec);
    if (ec)
        return fail(ErrorKind::io, "remove the checkpoint folder " +
                                       checkpoint_folder(vm_uuid).string() + ": " + ec.message());
    return {};
}

std::string finish_delete_command(const CheckpointTree& tree, const Checkpoint& checkpoint) {
    // Shell words: as they are when only safe characters, else in single quotes.
    auto word = [](const std::string& w) {
        bool plain = !w.empty() && std::all_of(w.begin(), w.end(), [](unsigned char ch) {
            return std::isalnum(ch) || std::string_view("-_.,:+@%/=").find(static_cast<char>(ch)) !=
                                           std::string_view::npos;
        });
        if (plain) return w;
        std::string quoted = "'";
        for (char ch : w) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
        return quoted + "'";
    };
    const std::string vm = tree.vm_name.empty() ? tree.vm_uuid : tree.vm_name;
    return "vmshadow checkpoint delete " + word(vm) + " " + word(checkpoint.name);
}

Status check_can_apply(const CheckpointTree& tree, const Checkpoint& checkpoint) {
    if (!checkpoint.delete_unfinished) return {};
    const std::string vm = tree.vm_name.empty() ? tree.vm_uuid : tree.vm_name;
    return fail(ErrorKind::conflict,
                "checkpoint '" + checkpoint.name + "' of vm '" + vm +
                    "' cannot be applied: deleting it stopped part-way and its layer may "
                    "already hold newer data; run `" +
                    finish_delete_command(tree, checkpoint) + "` again to finish deleting it");
}

Result<const Checkpoint*> find_checkpoint(const CheckpointTree& tree, std::string_view name_or_id) {
    // A name wins over an id: names may not be another checkpoint's id, so this is unambiguous.
    for (const auto& c : tree.checkpoints)
        if (c.name == name_or_id) return &c;
    for (const auto& c : tree.checkpoints)
        if (c.id == name_or_id) return &c;
    std::string vm = tree.vm_name.empty() ? tree.vm_uuid : tree.vm_name;
    if (tree.checkpoints.empty())
        return fail(ErrorKind::not_found, "VM '" + vm + "' has no checkpoint '" +
                                              std::string(name_or_id) + "' (it has none)");
    std::string names;
    for (const auto& c : tree.checkpoints) names += (names.empty() ? "'" : ", '") + c.name + "'";
    return fail(ErrorKind::not_found, "VM '" + vm + "' has no checkpoint '" +
                                          std::string(name_or_id) + "'; its checkpoints: " + names);
}

std::vector<const Checkpoint*> checkpoint_children(const CheckpointTree& tree,
                                                   const std::string& id) {
    std::vector<const Checkpoint*> out;
    for (const auto& c : tree.checkpoints)
        if (c.parent == id) out.push_back(&c);
    return out;
}

std::vector<const Checkpoint*> checkpoint_path_to_current(const CheckpointTree& tree) {
    std::vector<const Checkpoint*> path;
    for (std::string at = tree.current; !at.empty();) {
        auto it = std::find_if(tree.checkpoints.begin(), tree.checkpoints.end(),
                               [&](const Checkpoint& c) { return c.id == at; });
        // Bounded by the tree's size, so even an unchecked cycle ends.
        if (it == tree.checkpoints.end() || path.size() > tree.checkpoints.size()) break;
        path.push_back(&*it);
        at = it->parent;
    }
    std::reverse(path.begin(), path.end());
    return path;
}

std::string new_checkpoint_id(const CheckpointTree& tree) {
    std::random_device rd;
    std::mt19937 gen(rd());
    std::uniform_int_distribution<std::uint32_t> dist;
    for (;;) {
        char buf[9];
        std::snprintf(buf, sizeof buf, "%08x", dist(gen));
        std::string id = buf;
        bool used = std::any_of(tree.checkpoints.begin(), tree.checkpoints.end(),
                                [&](const Checkpoint& c) { return c.id == id || c.name == id; });
        if (!used) return id;
    }
}

std::vector<std::string> checkpoint_warnings(const CheckpointTree& tree, std::int64_t now) {
    std::vector<std::string> out;
    int depth = depth_of(tree, tree.current);
    if (depth > kCheckpointWarnDepth)
        out.push_back("its disks are " + std::to_string(depth) +
                      " checkpoint layers deep (more than " + std::to_string(kCheckpointWarnDepth) +
                      " slows every read): delete checkpoints you no longer need — checkpoints "
                      "are not backups");
    const Checkpoint* oldest = nullptr;
    for (const auto& c : tree.checkpoints)
        if (!oldest || c.created < oldest->created) oldest = &c;
    if (oldest && now - oldest->created > kCheckpointWarnAgeSeconds)
        out.push_back("its checkpoint '" + oldest->name + "' is " +
                      std::to_string((now - oldest->created) / 86400) +
                      " days old (more than 30): checkpoints are not backups — back the VM up "
                      "and delete old checkpoints");
    return out;
}

}  // namespace vmshadow::engine
