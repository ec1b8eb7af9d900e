// SPDX-License-Identifier: MIT
#include "vss/writer_metadata.h"

#include <algorithm>
#include <set>

#include "common/enum_names.h"

namespace vmshadow::vss {
namespace {

constexpr auto kFileKinds = enum_names<FileKind>(
    {
        {FileKind::file, "file"},
        {FileKind::disk, "disk"},
        {FileKind::config, "config"},
        {FileKind::nvram, "nvram"},
        {FileKind::memory_state, "memory-state"},
    },
    "file");

constexpr auto kComponentTypes = enum_names<ComponentType>(
    {{ComponentType::file_group, "file_group"}, {ComponentType::database, "database"}},
    "file_group");

constexpr auto kRestoreMethods = enum_names<RestoreMethod>(
    {
        {RestoreMethod::restore_if_not_there, "restore-if-not-there"},
        {RestoreMethod::restore_if_can_replace, "restore-if-can-replace"},
        {RestoreMethod::stop_restore_start, "stop-restore-start"},
        {RestoreMethod::restore_to_alternate_location, "restore-to-alternate-location"},
        {RestoreMethod::custom, "custom"},
    },
    "custom");

Result<Component> component_from_json(const nlohmann::json& in) {
    Component c;
    c.name = in.at("name").get<std::string>();
    c.logical_path = in.value("logical_path", "");
    c.type =
        kComponentTypes.parse(in.value("type", "file_group")).value_or(ComponentType::file_group);
    c.caption = in.value("caption", "");
    c.selectable_for_backup = in.value("selectable_for_backup", true);
    for (const auto& f : in.value("files", nlohmann::json::array())) {
        ComponentFile file;
        auto kind = parse_file_kind(f.value("kind", "file"));
        if (!kind) return fail(ErrorKind::corruption, "unknown file kind in " + f.dump());
        file.kind = *kind;
        file.path = f.at("path").get<std::string>();
        file.device = f.value("device", "");
        file.format = f.value("format", "");
        file.size_bytes = f.value("size_bytes", std::uint64_t{0});
        c.files.push_back(std::move(file));
    }
    return c;
}

}  // namespace

std::string ComponentKey::display() const {
    std::string out = writer_id + ":";
    if (!logical_path.empty()) out += logical_path + "/";
    return out + name;
}

std::string_view file_kind_name(FileKind kind) {
    return kFileKinds.name(kind);
}

std::optional<FileKind> parse_file_kind(std::string_view name) {
    return kFileKinds.parse(name);
}

std::string_view restore_method_name(RestoreMethod method) {
    return kRestoreMethods.name(method);
}

std::optional<RestoreMethod> parse_restore_method(std::string_view name) {
    return kRestoreMethods.parse(name);
}

const Component* WriterMetadata::find(const ComponentKey& key) const {
    if (key.writer_id != writer_id) return nullptr;
    auto it = std::find_if(components.begin(), components.end(), [&](const Component& c) {
        return c.logical_path == key.logical_path && c.name == key.name;
    });
    return it == components.end() ? nullptr : &*it;
}

Status validate(const WriterMetadata& metadata) {
    if (metadata.writer_id.empty()) return fail(ErrorKind::invalid_argument, "writer has no id");
    std::set<std::pair<std::string, std::string>> seen;
    for (const Component& c : metadata.components) {
        if (c.name.empty()) {
            return fail(ErrorKind::invalid_argument,
                        "writer '" + metadata.writer_id + "' has a component without a name");
        }
        if (!seen.insert({c.logical_path, c.name}).second) {
            return fail(ErrorKind::invalid_argument, "writer '" + metadata.writer_id +
                                                         "' lists component '" +
                                                         metadata.key_of(c).display() + "' twice");
        }
    }
    return {};
}

void to_json(nlohmann::json& out, const ComponentKey& key) {
    out = nlohmann::json{
        {"writer_id", key.writer_id}, {"logical_path", key.logical_path}, {"name", key.name}};
}

void to_json(nlohmann::json& out, const WriterMetadata& metadata) {
    out = nlohmann::json{{"writer_id", metadata.writer_id},
                         {"writer_name", metadata.writer_name},
                         {"restore_method", restore_method_name(metadata.restore_method)},
                         {"components", nlohmann::json::array()}};
    for (const Component& c : metadata.components) {
        nlohmann::json component{{"logical_path", c.logical_path},
                                 {"name", c.name},
                                 {"type", kComponentTypes.name(c.type)},
                                 {"caption", c.caption},
                                 {"selectable_for_backup", c.selectable_for_backup},
                                 {"files", nlohmann::json::array()}};
        for (const ComponentFile& f : c.files) {
            component["files"].push_back({{"kind", file_kind_name(f.kind)},
                                          {"path", f.path},
                                          {"device", f.device},
                                          {"format", f.format},
                                          {"size_bytes", f.size_bytes}});
        }
        out["components"].push_back(std::move(component));
    }
}

Result<ComponentKey> component_key_from_json(const nlohmann::json& in) {
    try {
        return ComponentKey{in.at("writer_id").get<std::string>(), in.value("logical_path", ""),
                            in.at("name").get<std::string>()};
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::corruption, std::string("component key: ") + e.what());
    }
}

Result<std::vector<Component>> components_from_json(const nlohmann::json& in) {
    try {
        std::vector<Component> components;
        for (const auto& c : in.value("components", nlohmann::json::array())) {
            auto component = component_from_json(c);
            if (!component) return fail(component.error());
            components.push_back(std::move(*component));
        }
        return components;
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::corruption, std::string("components: ") + e.what());
    }
}

Result<WriterMetadata> writer_metadata_from_json(const nlohmann::json& in) {
    try {
        WriterMetadata m;
        m.writer_id = in.at("writer_id").get<std::string>();
        m.writer_name = in.value("writer_name", m.writer_id);
        auto method = parse_restore_method(in.value("restore_method", "restore-if-can-replace"));
        if (!method) return fail(ErrorKind::corruption, "unknown restore method");
        m.restore_method = *method;
        auto components = components_from_json(in);
        if (!components) return fail(components.error());
        m.components = std::move(*components);
        return m;
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::corruption, std::string("writer metadata: ") + e.what());
    }
}

}  // namespace vmshadow::vss
