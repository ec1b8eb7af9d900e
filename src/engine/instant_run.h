// SPDX-License-Identifier: MIT
#pragma once
// Instant recovery: the VM runs from the repository's NBD exports (each with a local overlay
// for the guest's writes; an I/O error pauses the guest instead of failing a write) while QEMU
// copies every disk to its final local image, mirroring new writes; once all copies are in
// sync the disks pivot to the local images, the VM becomes persistent and the servers stop.
//
// The servers outlive vmshadow, and the run is recorded in its work folder (instant.json):
// if a server dies the VM is paused with every write kept and the command fails; if vmshadow
// is killed the VM keeps running. Either way the same command run again resumes: dead servers
// restart on the same sockets and overlays (QEMU reconnects), the VM resumes, copies that
// stopped start again, and the switch completes.
//
// Record before start: the record (fsync'd) names the run's socket folder and every disk
// before anything else exists, and each server's pid and start time before nbdkit runs
// (process.h). So a vmshadow killed at any instant leaves nothing the record does not name,
// and the next run (or `repo unlock`, when no VM runs on them) stops every server of it.
//
// This module is the run's record (instant.json): what it holds, how it is saved, loaded,
// and how the servers it names are stopped. It is not: the recovery's steps
// (instant_recovery.cpp) or starting a server (export/point_server.h).
//
// Thread-safety: a run is one command's own; the record is replaced atomically (fsync).

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/process.h"
#include "engine/vm_restore.h"

namespace vmshadow::engine {

inline constexpr const char* kInstantRecord = "instant.json";

struct InstantDisk {
    std::string name, socket, overlay, pidfile, log, final_path;
    ProcessId server;
    ProcessId session;  // the session nbdkit lives in, recorded before it ran
    bool pivoted = false;
};

struct InstantRun {
    std::filesystem::path work, sockets;
    std::string vm, uuid, point;
    std::string resume;  // the command that resumes it, for `repo unlock`
    std::vector<InstantDisk> disks;

    Status save() const;
    // The recorded servers, and any nbdkit serving one of this run's overlays that an older
    // vmshadow started without recording it.
    void stop_servers() const;
    // The run is over (or never ran): servers, sockets and the work folder with its overlays go.
    void remove() const;

    static Result<InstantRun> load(const std::filesystem::path& work);
};

// The command that resumes an instant recovery, for messages.
std::string resume_command(const VmRestoreOptions& options, const std::string& point);

// What the servers' repository lock says it is for; instant_record_of_lock reads it back.
std::string instant_owner(const InstantRun& run);

}  // namespace vmshadow::engine
