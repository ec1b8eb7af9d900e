// SPDX-License-Identifier: MIT
#pragma once
// WriterMetadata: what a writer owns, as it answers Identify (the VSS Writer Metadata
// Document, WMD).
//
// This module is: the writer's id and name, its restore method, and its components; each
// component has a logical path and a name (together unique within the writer) and lists
// its files and disks. The libvirt VM writer has one component per VM ("vm/<name>": the
// domain XML, each disk with target/path/format/size, NVRAM, kernel, saved state); an
// exec writer has one component named after itself unless its command describes more.
// This module is not: what was selected or how the backup went (backup_document.h).
//
// Thread-safety: plain values. JSON names are stored on restore points: never change them.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace vmshadow::vss {

// Names a component across writers: writer id + logical path + component name.
struct ComponentKey {
    std::string writer_id;
    std::string logical_path;  // e.g. "vm"; may be empty
    std::string name;          // e.g. the VM's name
    // "writer_id:logical_path/name" for messages.
    std::string display() const;
    friend bool operator==(const ComponentKey&, const ComponentKey&) = default;
    friend auto operator<=>(const ComponentKey&, const ComponentKey&) = default;
};

enum class FileKind { file, disk, config, nvram, memory_state };
std::string_view file_kind_name(FileKind kind);
std::optional<FileKind> parse_file_kind(std::string_view name);

// One file or disk of a component (VSS file descriptor).
struct ComponentFile {
    FileKind kind = FileKind::file;
    std::string path;    // host path
    std::string device;  // disk target (vda, sdb); empty for files
    std::string format;  // qcow2, raw; empty when not an image
    std::uint64_t size_bytes = 0;
    friend bool operator==(const ComponentFile&, const ComponentFile&) = default;
};

enum class ComponentType { database, file_group };  // VSS_CT_DATABASE / VSS_CT_FILEGROUP

struct Component {
    std::string logical_path;
    std::string name;
    ComponentType type = ComponentType::file_group;
    std::string caption;  // for people
    bool selectable_for_backup = true;
    std::vector<ComponentFile> files;
    friend bool operator==(const Component&, const Component&) = default;
};

// VSS_RME_*: how the writer wants to be restored.
enum class RestoreMethod {
    restore_if_not_there,
    restore_if_can_replace,
    stop_restore_start,  // the VM writer: PreRestore stops and undefines, PostRestore defines
    restore_to_alternate_location,
    custom,
};
std::string_view restore_method_name(RestoreMethod method);
std::optional<RestoreMethod> parse_restore_method(std::string_view name);

struct WriterMetadata {
    std::string writer_id;    // stable across runs (the VM writer: "vmshadow-libvirt-vm")
    std::string writer_name;  // for people
    RestoreMethod restore_method = RestoreMethod::restore_if_can_replace;
    std::vector<Component> components;

    ComponentKey key_of(const Component& component) const {
        return {writer_id, component.logical_path, component.name};
    }
    const Component* find(const ComponentKey& key) const;
    friend bool operator==(const WriterMetadata&, const WriterMetadata&) = default;
};

// Checks what the coordinator relies on: an id, unique component keys.
Status validate(const WriterMetadata& metadata);

void to_json(nlohmann::json& out, const ComponentKey& key);
void to_json(nlohmann::json& out, const WriterMetadata& metadata);
Result<ComponentKey> component_key_from_json(const nlohmann::json& in);
Result<WriterMetadata> writer_metadata_from_json(const nlohmann::json& in);
// The components part alone, as an exec writer prints it on `identify`:
// {"components": [{"name": ..., "logical_path": ..., "files": [{"path": ...}]}]}.
Result<std::vector<Component>> components_from_json(const nlohmann::json& in);

}  // namespace vmshadow::vss
