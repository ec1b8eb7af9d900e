// SPDX-License-Identifier: MIT
#pragma once
// Writer status: what `vmshadow writers` shows — the writers of the last backup or
// restore with their states and last errors (from the writer state file the coordinator
// writes), and the exec writers configured now; and `vmshadow writers test`, which runs
// the configured exec writers through a backup with an empty snapshot set (or through one
// event) so an administrator can check a hook before the real backup calls it.

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "vss/event.h"
#include "vss/exec_writer_config.h"
#include "vss/writer_report.h"

namespace vmshadow::engine {

struct WriterStatusRequest {
    std::filesystem::path state_file = vss::kDefaultWriterStateFile;
    std::filesystem::path writers_dir = vss::kDefaultExecWritersDir;
};

struct WriterStatusListing {
    std::optional<vss::WriterReport> last;          // nothing recorded yet: nullopt
    std::vector<vss::ExecWriterConfig> configured;  // exec writers in writers_dir now
    std::optional<Error> config_error;              // writers_dir could not be read
};

// Fails only when the state file exists but cannot be read or parsed.
Result<WriterStatusListing> list_writer_status(const WriterStatusRequest& request);

struct WriterTestRequest {
    std::filesystem::path writers_dir = vss::kDefaultExecWritersDir;
    std::optional<vss::Event> event;  // one event only; default: a whole backup sequence
    std::vector<std::string> vms;     // passed to the writers as VMSHADOW_VMS
};

// The report of the test run (never written to the state file: it is not a backup).
// Fails when the config cannot be read or there are no exec writers; a writer's veto is
// in the report (succeeded = false, error set), not an Error.
Result<vss::WriterReport> test_exec_writers(const WriterTestRequest& request);

}  // namespace vmshadow::engine
