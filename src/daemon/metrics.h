// SPDX-License-Identifier: MIT
#pragma once
// Metrics: the daemon's state in Prometheus' text exposition format (GET /metrics), checked
// by the real `promtool check metrics` in tests.
//
// This module is: a snapshot of numbers (MetricsSnapshot) the daemon fills, and the function
// that renders it — HELP and TYPE lines, label values escaped, one family each:
//   vmshadow_info{version}                            gauge 1
//   vmshadow_daemon_start_time_seconds                gauge
//   vmshadow_vm_last_success_timestamp_seconds{vm}    gauge
//   vmshadow_vm_last_backup_duration_seconds{vm}      gauge
//   vmshadow_vm_last_backup_added_bytes{vm}           gauge
//   vmshadow_vm_last_freeze_window_seconds{vm}        gauge (absent when no freeze)
//   vmshadow_vm_backup_failures_total{vm}             counter
//   vmshadow_repository_size_bytes{repository}        gauge (stored, after dedup+compression)
//   vmshadow_repository_logical_bytes{repository}     gauge (what the points hold)
//   vmshadow_repository_dedup_ratio{repository}       gauge (logical / stored)
//   vmshadow_tasks{state}                             gauge (queued, running)
//   vmshadow_tasks_finished_total{kind,state}         counter
//   vmshadow_queue_length                             gauge
// and, rendered apart from the snapshot (render_replica_metrics, from ApiBackend::replicas()'s
// JSON), one series per replicated VM:
//   vmshadow_replica_state{vm,role,state}             gauge 1 (the current state only)
//   vmshadow_replica_rpo_seconds{vm}                  gauge (absent until a point exists)
//   vmshadow_replica_last_cycle_timestamp_seconds{vm} gauge (absent before the first cycle)
//   vmshadow_replica_cycle_seconds_avg{vm}            gauge
//   vmshadow_replica_cycle_seconds_max{vm}            gauge
//   vmshadow_replica_sent_bytes_total{vm}             counter
//   vmshadow_replica_missed_cycles_total{vm}          counter
// It is not: collection (the daemon reads its TaskStore and repositories) or an HTTP route.
//
// Thread-safety: a pure function.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace vmshadow::daemon {

struct VmMetrics {
    std::string vm;
    std::optional<double> last_success;  // unix s
    std::optional<double> last_duration_s;
    std::optional<std::uint64_t> last_added_bytes;
    std::optional<double> last_freeze_s;
    std::uint64_t failures_total = 0;
};

struct RepositoryMetrics {
    std::string name;
    std::uint64_t stored_bytes = 0;
    std::uint64_t logical_bytes = 0;
};

struct MetricsSnapshot {
    std::string version;
    double start_time = 0;  // unix s
    std::vector<VmMetrics> vms;
    std::vector<RepositoryMetrics> repositories;
    std::uint64_t tasks_queued = 0;
    std::uint64_t tasks_running = 0;
    // (kind, state) → count since the daemon started
    std::map<std::pair<std::string, std::string>, std::uint64_t> tasks_finished;
};

std::string render_metrics(const MetricsSnapshot& snapshot);

// The replica families above from {"replicas": [...]} (or the bare list) as
// ApiBackend::replicas() answers; appended to render_metrics()'s text. A field that is
// missing or of another type has no sample (never an exception); a VM listed twice (both
// roles on one host) keeps one series per family: the first by (vm, role).
std::string render_replica_metrics(const nlohmann::json& replicas);

}  // namespace vmshadow::daemon
