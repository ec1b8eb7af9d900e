// SPDX-License-Identifier: MIT
#pragma once
// A cycle written to a folder instead of a replica host: offline initial replication
// (`vmshadow replica export-initial VM DIR`; the replica host's import_initial reads it).
//
// Layout (the replica host reads exactly this):
//   <dir>/cycle.json     {"vm": VmAnnouncement, "begin": CycleBegin,
//                         "commit": {"chunks", "frames", "sha256"}, "primary_subject"}
//   <dir>/chunk-<seq>.bin  each chunk body (cycle_format.h), seq 0, 1, 2, ... in decimal
// cycle.json is written last (atomically): a folder without it is an export cut off halfway.
// This module is: a ReplicaClient whose cycle calls write those files; every other call is
// unsupported.
//
// Thread-safety: one thread.
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "replica/replica_client.h"

namespace vmshadow::replica {

// The folder must be empty or absent (created 0700); `announcement` and `primary_subject`
// go into cycle.json as they are.
Result<std::unique_ptr<ReplicaClient>> folder_client(const std::filesystem::path& dir,
                                                     nlohmann::json announcement,
                                                     std::string primary_subject);

}  // namespace vmshadow::replica
