// SPDX-License-Identifier: MIT
#pragma once
// Point server: one disk of a restore point served over NBD on a Unix socket — nbdkit running
// nbdkit-vmshadow-plugin.so — as `mount`, `verify --boot` and instant recovery use it.
//
// This module is: finding the plugin, and starting nbdkit for one disk with its overlay, log
// and pidfile, returning once it serves (its pidfile written). A server either dies with
// vmshadow (`dies_with_vmshadow`: nbdkit in the foreground, --exit-with-parent, and
// PR_SET_PDEATHSIG set before exec — a throwaway VM's disks must not outlive the command) or
// outlives it (a mount, or a VM running from the repository while its copy can be resumed:
// nbdkit forks into the background, which is the only way it survives vmshadow — in the
// foreground nbdkit 1.32 sets PR_SET_PDEATHSIG itself) and is then recorded before it runs
// (`record` gets the leader of the session the server will live in; process.h's rule): no
// server exists that no record names. A stale socket of a
// dead server is removed first, so a server can be restarted on the socket QEMU reconnects to. The
// plugin's own start error ("ERROR [kind]" in the log, e.g. the repository locked by gc) comes back
// with its kind. It is not: stopping servers (process.h) nor what the NBD export serves
// (served_disk.h).
//
// Thread-safety: functions only; call from one thread (they fork).

#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/process.h"

namespace vmshadow::exporter {

// $VMSHADOW_NBDKIT_PLUGIN, else nbdkit-vmshadow-plugin.so beside the vmshadow binary's build
// or install tree, else /usr/lib/vmshadow.
Result<std::string> find_plugin();

struct PointServerOptions {
    std::string plugin;    // empty: find_plugin()
    std::string repo;      // repository path or "s3:…" location
    std::string point;     // full restore point id
    std::string disk;      // disk name
    std::string socket;    // Unix socket to serve on (≤ 107 bytes)
    std::string overlay;   // file taking the writes (kept across restarts); empty: read-only
    std::string pidfile;   // written by nbdkit once it serves
    std::string log;       // nbdkit's stdout and stderr
    std::string password;  // encrypted repositories: given in the environment, never argv
    // More of nbdkit's environment ("NAME=value"): an "s3:…" repository's options
    // (repo::storage_environment). AWS_* credentials reach it by inheritance, never argv.
    std::vector<std::string> environment;
    // What the server is for, in its repository lock ("nbd export for OWNER"), so that
    // `repo unlock` and a locked gc say who holds the lock and how to end it.
    std::string owner;
    bool dies_with_vmshadow = false;
    // Required unless dies_with_vmshadow: writes the identity of the server's session
    // durably before nbdkit runs (see DaemonOptions::record; stop_session stops it).
    std::function<Status(const ProcessId&)> record;
};

Result<ProcessId> start_point_server(const PointServerOptions& options);

}  // namespace vmshadow::exporter
