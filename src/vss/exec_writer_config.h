// SPDX-License-Identifier: MIT
#pragma once
// ExecWriterConfig: how a host application joins backups as an exec writer.
//
// This module is: the config format and its loader. One JSON file per writer in a
// directory (default /etc/vmshadow/writers.d/, files ending in ".json", read in name
// order; other files are ignored):
//   {
//     "name": "pgsql",                                  // required; [A-Za-z0-9._-]+
//     "command": ["/usr/local/lib/pgsql-vmshadow", "--cluster", "main"],   // required;
//                                                       // argv, no shell; a string = argv[0]
//     "events": ["prepare-backup", "freeze", "thaw", "abort"],  // optional; default: all
//     "timeout_seconds": 60,                            // optional; default for every event
//     "timeouts": {"freeze": 10, "thaw": 10},           // optional; per event, seconds
//     "environment": {"PGHOST": "/run/postgresql"}      // optional; added to the command's
//   }
// The command is run as `COMMAND... EVENT`; see exec_writer.h and docs/VSS.md for the
// rest of the contract. A file that does not parse is an error, never silently skipped:
// a writer that cannot join must stop the backup, not be left out of it.
// This module is not: running anything (exec_writer.h).
//
// Thread-safety: plain values and a pure loader.

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "vss/event.h"

namespace vmshadow::vss {

inline constexpr const char* kDefaultExecWritersDir = "/etc/vmshadow/writers.d";

struct ExecWriterConfig {
    std::string name;
    std::vector<std::string> command;
    std::set<Event> events;  // the events the command is called for
    std::chrono::milliseconds default_timeout = std::chrono::seconds(60);
    std::map<Event, std::chrono::milliseconds> timeouts;
    std::map<std::string, std::string> environment;
    std::filesystem::path source;  // the file it came from

    bool wants(Event event) const { return events.contains(event); }
    std::chrono::milliseconds timeout_for(Event event) const;
};

Result<ExecWriterConfig> parse_exec_writer_config(std::string_view json_text,
                                                  const std::filesystem::path& source);
// Every *.json in `dir`, sorted by file name. A missing directory means no exec writers.
// Fails on the first file that cannot be read or parsed, or on two writers with one name.
Result<std::vector<ExecWriterConfig>> load_exec_writer_configs(const std::filesystem::path& dir);

}  // namespace vmshadow::vss
