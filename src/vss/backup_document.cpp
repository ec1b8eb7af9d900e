// SPDX-License-Identifier: MIT
#include "vss/backup_document.h"

#include <algorithm>

#include "common/enum_names.h"

namespace vmshadow::vss {
namespace {

constexpr const char* kFormatName = "vmshadow-backup-document";

constexpr auto kRestoreStatusNames = enum_names<FileRestoreStatus>(
    {
        {FileRestoreStatus::undefined, "undefined"},
        {FileRestoreStatus::none, "none"},
        {FileRestoreStatus::all, "all"},
        {FileRestoreStatus::failed, "failed"},
    },
    "undefined");

Result<ComponentEntry> entry_from_json(const nlohmann::json& in) {
    ComponentEntry entry;
    auto key = component_key_from_json(in.at("key"));
    if (!key) return fail(key.error());
    entry.key = std::move(*key);
    entry.backup_stamp = in.value("backup_stamp", "");
    entry.previous_backup_stamp = in.value("previous_backup_stamp", "");
    entry.backup_metadata = in.value("backup_metadata", "");
    if (in.contains("backup_succeeded") && !in["backup_succeeded"].is_null()) {
        entry.backup_succeeded = in["backup_succeeded"].get<bool>();
    }
    auto status = parse_file_restore_status(in.value("file_restore_status", "undefined"));
    if (!status) return fail(ErrorKind::corruption, "bad file_restore_status in " + in.dump());
    entry.file_restore_status = *status;
    entry.restore_message = in.value("restore_message", "");
    return entry;
}

Status read_lists(const nlohmann::json& in, BackupDocument& doc) {
    for (const auto& w : in.at("writers")) {
        auto metadata = writer_metadata_from_json(w);
        if (!metadata) return fail(metadata.error());
        doc.writers.push_back(std::move(*metadata));
    }
    for (const auto& c : in.at("components")) {
        auto entry = entry_from_json(c);
        if (!entry) return fail(entry.error());
        doc.components.push_back(std::move(*entry));
    }
    for (const auto& r : in.at("results")) {
        auto status = writer_status_from_json(r);
        if (!status) return fail(status.error());
        doc.results.push_back(std::move(*status));
    }
    return {};
}

}  // namespace

std::string_view file_restore_status_name(FileRestoreStatus status) {
    return kRestoreStatusNames.name(status);
}

std::optional<FileRestoreStatus> parse_file_restore_status(std::string_view name) {
    return kRestoreStatusNames.parse(name);
}

ComponentEntry* BackupDocument::find(const ComponentKey& key) {
    auto it = std::find_if(components.begin(), components.end(),
                           [&](const ComponentEntry& e) { return e.key == key; });
    return it == components.end() ? nullptr : &*it;
}

const ComponentEntry* BackupDocument::find(const ComponentKey& key) const {
    return const_cast<BackupDocument*>(this)->find(key);
}

const WriterMetadata* BackupDocument::writer(std::string_view writer_id) const {
    auto it = std::find_if(writers.begin(), writers.end(),
                           [&](const WriterMetadata& w) { return w.writer_id == writer_id; });
    return it == writers.end() ? nullptr : &*it;
}

void BackupDocument::inherit_backup_stamps(const BackupDocument& previous) {
    for (ComponentEntry& entry : components) {
        if (const ComponentEntry* old = previous.find(entry.key)) {
            entry.previous_backup_stamp = old->backup_stamp;
        }
    }
}

void to_json(nlohmann::json& out, const ComponentEntry& entry) {
    out =
        nlohmann::json{{"key", entry.key},
                       {"backup_stamp", entry.backup_stamp},
                       {"previous_backup_stamp", entry.previous_backup_stamp},
                       {"backup_metadata", entry.backup_metadata},
                       {"backup_succeeded", nullptr},
                       {"file_restore_status", file_restore_status_name(entry.file_restore_status)},
                       {"restore_message", entry.restore_message}};
    if (entry.backup_succeeded) out["backup_succeeded"] = *entry.backup_succeeded;
}

void to_json(nlohmann::json& out, const BackupDocument& document) {
    out = nlohmann::json{{"format", kFormatName},
                         {"version", BackupDocument::kFormatVersion},
                         {"backup_id", document.backup_id},
                         {"operation", operation_name(document.operation)},
                         {"backup_type", backup_type_name(document.backup_type)},
                         {"vms", document.vms},
                         {"writers", document.writers},
                         {"components", document.components},
                         {"results", document.results}};
}

Result<BackupDocument> backup_document_from_json(const nlohmann::json& in) {
    try {
        if (in.value("format", "") != kFormatName) {
            return fail(ErrorKind::corruption, "not a vmshadow backup document");
        }
        int version = in.at("version").get<int>();
        if (version < BackupDocument::kMinReadableVersion ||
            version > BackupDocument::kMaxReadableVersion) {
            return fail(ErrorKind::unsupported,
                        "backup document version " + std::to_string(version) +
                            " is not supported (this vmshadow reads " +
                            std::to_string(BackupDocument::kMinReadableVersion) + ".." +
                            std::to_string(BackupDocument::kMaxReadableVersion) + ")");
        }
        BackupDocument doc;
        doc.backup_id = in.at("backup_id").get<std::string>();
        doc.operation =
            in.value("operation", "backup") == "restore" ? Operation::restore : Operation::backup;
        auto type = parse_backup_type(in.value("backup_type", "full"));
        if (!type) return fail(ErrorKind::corruption, "bad backup_type");
        doc.backup_type = *type;
        doc.vms = in.value("vms", std::vector<std::string>{});
        if (auto lists = read_lists(in, doc); !lists) return fail(lists.error());
        return doc;
    } catch (const nlohmann::json::exception& e) {
        return fail(ErrorKind::corruption, std::string("backup document: ") + e.what());
    }
}

Result<BackupDocument> parse_backup_document(std::string_view text) {
    auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded()) return fail(ErrorKind::corruption, "backup document is not JSON");
    return backup_document_from_json(json);
}

}  // namespace vmshadow::vss
