// SPDX-License-Identifier: MIT
#pragma once
// BackupDocument: the record of one backup (the VSS Backup Components Document, BCD).
//
// This module is: what the requester selected, each selected component's backup stamp
// (the VM writer stores its checkpoint name there; the next incremental hands it back as
// previous_backup_stamp), writer-private backup metadata, whether each component was
// backed up, the file-restore status during a restore, every writer's metadata (WMD) and
// every writer's final status. It serialises to JSON so the engine stores it on the
// restore point, and a restore starts from it.
// This module is not: the event sequence (coordinator.h) or the restore point manifest.
//
// Format (JSON object; names never change):
//   {"format": "vmshadow-backup-document", "version": 1,
//    "backup_id": str, "operation": "backup"|"restore", "backup_type": "full"|"incremental",
//    "vms": [str], "writers": [WriterMetadata], "components": [ComponentEntry],
//    "results": [WriterStatus]}
// A reader refuses versions outside [kMinReadableVersion, kMaxReadableVersion].
//
// Thread-safety: plain values.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "vss/event.h"
#include "vss/writer_metadata.h"
#include "vss/writer_state.h"

namespace vmshadow::vss {

// VSS_FILE_RESTORE_STATUS: set by the requester between PreRestore and PostRestore.
enum class FileRestoreStatus {
    undefined,  // not set (yet)
    none,       // no file was restored: the old state is intact
    all,        // every file was restored
    failed,     // some were: the component is in a partial state
};
std::string_view file_restore_status_name(FileRestoreStatus status);
std::optional<FileRestoreStatus> parse_file_restore_status(std::string_view name);

// One selected component. Writers may change only backup_stamp, backup_metadata and
// restore_message (as in VSS); the coordinator copies other fields back unchanged.
struct ComponentEntry {
    ComponentKey key;
    std::string backup_stamp;           // set by the writer for this backup
    std::string previous_backup_stamp;  // the stamp of the backup this one is based on
    std::string backup_metadata;        // writer-private, opaque to everyone else
    std::optional<bool> backup_succeeded;
    FileRestoreStatus file_restore_status = FileRestoreStatus::undefined;
    std::string restore_message;  // a writer's pre/post-restore failure message
    friend bool operator==(const ComponentEntry&, const ComponentEntry&) = default;
};

struct BackupDocument {
    static constexpr int kFormatVersion = 1;  // written
    static constexpr int kMinReadableVersion = 1;
    static constexpr int kMaxReadableVersion = 1;

    std::string backup_id;
    Operation operation = Operation::backup;
    BackupType backup_type = BackupType::full;
    std::vector<std::string> vms;  // informational: the VMs this backup covers
    std::vector<WriterMetadata> writers;
    std::vector<ComponentEntry> components;  // the selected ones
    std::vector<WriterStatus> results;

    ComponentEntry* find(const ComponentKey& key);
    const ComponentEntry* find(const ComponentKey& key) const;
    const WriterMetadata* writer(std::string_view writer_id) const;
    // The stamp each component had in `previous`, copied into previous_backup_stamp of the
    // same component here (for an incremental backup based on `previous`).
    void inherit_backup_stamps(const BackupDocument& previous);
};

void to_json(nlohmann::json& out, const ComponentEntry& entry);
void to_json(nlohmann::json& out, const BackupDocument& document);
Result<BackupDocument> backup_document_from_json(const nlohmann::json& in);
Result<BackupDocument> parse_backup_document(std::string_view text);

}  // namespace vmshadow::vss
