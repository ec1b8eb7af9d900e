// SPDX-License-Identifier: MIT
#pragma once
// The link record: what the primary keeps about one replicated VM, in
// <state-dir>/replica/<uuid>.json, replaced atomically (common/atomic_file.h).
//
// This module is: the record's fields (the LinkSpec the administrator chose, the link's
// checkpoint chain and last acknowledged checkpoint, its state and the cycle history health
// is computed from), JSON both ways with every field checked (a damaged or foreign file is
// refused naming the file and the field, never half-read), and load/save.
// Versioned: "version": 1; a newer version is refused (unsupported) rather than misread.
// It is not: deciding anything (replica_primary.cpp) or computing health (replica_health.h).
//
// Thread-safety: plain values and free functions.
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "replica/replica_health.h"
#include "replica/replica_primary.h"

namespace vmshadow::replica {

inline constexpr int kLinkVersion = 1;

struct LinkRecord {
    LinkSpec spec;
    std::string uuid;
    std::string
        chain_id;  // lower hex (ours: 16): the link's checkpoint chain (engine/vm_changes.h)
    // initial | normal | paused | resync-required | failed-over
    std::string state = "initial";
    // Set while paused: the state to go back to on resume.
    std::string paused_from;
    std::string checkpoint;      // the last checkpoint the replica acknowledged ("": none)
    std::string checkpoint_xml;  // its full XML, the next read's base
    std::string point_time;      // ISO time of the newest acknowledged point
    std::optional<std::int64_t> last_attempt;  // unix s: the last cycle's start
    // unix s: a cycle began and has not been recorded yet. Found set when the daemon starts,
    // the daemon died during that cycle: it is recorded as failed, so health shows it.
    std::optional<std::int64_t> cycle_running;
    std::optional<std::int64_t> last_app_consistent;  // unix s: the last application point
    // export_initial wrote a full cycle ending at this checkpoint: the link adopts it as its
    // acknowledged checkpoint once the replica shows it imported (its latest point's token).
    std::string exported_token;
    std::string exported_checkpoint_xml;
    std::string last_error;
    std::uint64_t bytes_sent_total = 0;
    std::uint64_t cycles_total = 0;
    std::deque<CycleRecord> cycles;  // oldest first, trimmed (trim_history)
};

nlohmann::json link_to_json(const LinkRecord& link);
// invalid_argument naming `what` (the file) and the field; unsupported for a newer version.
Result<LinkRecord> link_from_json(const nlohmann::json& json, const std::string& what);

// The record file of a VM uuid under `dir` (<state-dir>/replica).
std::filesystem::path link_path(const std::filesystem::path& dir, const std::string& uuid);
Result<LinkRecord> load_link(const std::filesystem::path& file);
Status save_link(const std::filesystem::path& file, const LinkRecord& link);

// The link a reverse starts (ReplicaPrimary::reverse, on the new primary): `earlier` is the
// administrator's spec this host had for the VM (interval, cap, ...) when it has one. Its base
// is the failover's reverse checkpoint; state "normal" after a planned failover (the old
// primary's disks are that point), "resync-required" after an unplanned one (they hold writes
// this host never received: the first cycle compares block hashes and sends what differs).
LinkRecord reverse_link(const struct ReverseSource& source, const std::optional<LinkSpec>& earlier);

std::string initial_name(LinkSpec::Initial initial);
std::optional<LinkSpec::Initial> parse_initial(std::string_view text);

}  // namespace vmshadow::replica
