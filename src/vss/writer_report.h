// SPDX-License-Identifier: MIT
#pragma once
// WriterReport: what happened to every writer in the last backup or restore, and the
// state file it is kept in (`vmshadow writers` reads it).
//
// This module is: the report (operation, backup id, times, outcome, the error that ended
// it, each writer's WriterStatus) and its file, written atomically (temp + fsync + rename
// + fsync dir) by the coordinator when an operation ends.
// This module is not: the history of backups (restore points keep their BackupDocument).
//
// File format (JSON; names never change):
//   {"format": "vmshadow-writer-state", "version": 1, "backup_id": str,
//    "operation": "backup"|"restore", "started": ISO-8601 UTC, "finished": ISO-8601 UTC,
//    "outcome": "succeeded"|"failed", "error": str|null, "error_kind": str|null,
//    "writers": [WriterStatus]}
//
// Thread-safety: plain values; the file functions are safe to call concurrently.

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "vss/event.h"
#include "vss/writer_state.h"

namespace vmshadow::vss {

inline constexpr const char* kDefaultWriterStateFile = "/var/lib/vmshadow/writers.json";

struct WriterReport {
    static constexpr int kFormatVersion = 1;

    std::string backup_id;
    Operation operation = Operation::backup;
    std::string started;   // ISO-8601 UTC
    std::string finished;  // ISO-8601 UTC; empty while running
    bool succeeded = false;
    std::optional<Error> error;
    std::vector<WriterStatus> writers;
};

// "2026-11-22T01:02:03Z" for now().
std::string utc_timestamp_now();

void to_json(nlohmann::json& out, const WriterReport& report);
Result<WriterReport> writer_report_from_json(const nlohmann::json& in);

Status save_writer_report(const std::filesystem::path& path, const WriterReport& report);
// nullopt when the file does not exist (no operation recorded yet).
Result<std::optional<WriterReport>> load_writer_report(const std::filesystem::path& path);

}  // namespace vmshadow::vss
