// SPDX-License-Identifier: MIT
#pragma once
// Manifests and commit records: what a restore point is.
//
// This module is: the restore point's manifest (VM metadata, each disk's chunk map, the VM's
// files, consistency level, timings), the commit record that makes a group of points exist
// together, and annotations added later. It is not: reading or writing them (repository.h).
//
// On disk (JSON inside the sealed envelope of codec.h, file name = SHA-256 of the file):
//   commits/<id>:      {"format_version":1, "time":…, "points":[manifest, …]}
//   annotations/<id>:  {"format_version":1, "point":<id>, "time":…, "kind":…, "data":{…}}
// A point's id is the (keyed, when encrypted) SHA-256 of its manifest's JSON text with
// sorted keys; the manifest carries no id of its own. Unknown JSON fields are preserved on
// read-modify-write (forget) and ignored otherwise, so later versions can add fields.
//
// A chunk map (MapRef) is a tree of content-addressed blocks: level-0 entries are the ids of
// the disk's chunks (all-zero id = hole), each block holds up to `fanout` ids, and each
// level above holds the ids of the blocks below, up to one root (docs/REPOSITORY.md).
//
// Thread-safety: plain values.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/time_format.h"
#include "repo/hash.h"

namespace vmshadow::repo {

struct MapRef {
    Hash256 root;  // kHoleId when the whole object is a hole
    std::uint32_t levels = 1;
};

struct DiskRecord {
    std::string name;        // "disk0", or the VM's target ("vda")
    std::uint64_t size = 0;  // virtual size in bytes
    MapRef map;
    nlohmann::json info = nlohmann::json::object();  // source format, path, checkpoint…
    std::uint64_t bytes_added = 0;
};

struct FileRecord {
    std::string name;  // "domain.xml", "nvram.fd", "memory.save", "checkpoint-<n>.xml"…
    std::string role;  // "domain_xml", "nvram", "kernel", "initrd", "memory", "checkpoint_xml"
    std::uint64_t size = 0;
    MapRef map;
};

struct Annotation {
    Hash256 file_id;
    Hash256 point;
    std::string time;
    std::string kind;  // e.g. "boot_verification"
    nlohmann::json data = nlohmann::json::object();
};

struct RestorePoint {
    Hash256 id;      // computed from the manifest
    Hash256 commit;  // the commit record holding it
    std::string vm;
    std::int64_t time = 0;     // seconds since the epoch, UTC
    std::int64_t time_us = 0;  // the same instant in microseconds: orders points of one second
    std::string consistency;   // application | image | crash | offline
    std::optional<Hash256> parent;
    nlohmann::json metadata = nlohmann::json::object();
    nlohmann::json timings = nlohmann::json::object();
    std::vector<DiskRecord> disks;
    std::vector<FileRecord> files;
    std::uint64_t bytes_added = 0;
    nlohmann::json extra = nlohmann::json::object();  // fields of newer versions, kept as is
    std::vector<Annotation> annotations;              // filled when listing

    const DiskRecord* disk(std::string_view name) const;
};

nlohmann::json manifest_to_json(const RestorePoint& p);
Result<RestorePoint> manifest_from_json(const nlohmann::json& j);
// The JSON object `points --json` prints.
nlohmann::json point_summary_json(const RestorePoint& p);

}  // namespace vmshadow::repo
