// SPDX-License-Identifier: MIT
#pragma once
// Boot verification: `vmshadow verify POINT --boot [--exec CMD] [--timeout S]` — automatic
// proof that a restore point boots and its application answers (Veeam's SureBackup).
//
// This module is: the point's disks served straight from the repository (nbdkit with the
// vmshadow plugin, one per disk, each with a throwaway overlay taking the guest's writes:
// nothing is copied and the repository never changes); a transient VM from the point's domain
// XML (vmwriter/domain_rewrite.h: a unique name, no UUID, no MACs, NO network interfaces, its
// disks on the NBD sockets, boot files from the point); boot; wait for the guest agent; with
// `exec`, run a command in the guest and require exit 0; destroy the VM, stop the servers,
// remove every file; record the result as a `boot_verification` annotation on the point
// (shown by `vmshadow points`). A failed verification is a result (recorded), not an error;
// an error is when verification could not be attempted (no agent channel, plugin missing).
// It is not: a restore (nothing is kept) or the NBD server (src/export/).
//
// Thread-safety: one call at a time per repository object.

#include <chrono>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/task.h"
#include "repo/repository.h"
#include "virt/connection.h"

namespace vmshadow::engine {

struct BootVerifyOptions {
    std::string point;  // id, unique prefix or VM@latest
    std::string exec;   // shell command run in the guest; empty: the agent answering suffices
    std::chrono::seconds timeout{300};  // boot until the agent answers (+ the command)
    std::string password;               // encrypted repositories: handed to nbdkit
    std::string work_dir = "/var/tmp";  // sockets, overlays, logs (removed at the end)
    std::string plugin;                 // empty: the installed/built plugin
    // Phase "boot"; a cancel while the guest boots removes the throwaway VM and its servers
    // and records nothing on the point (ErrorKind::cancelled). nullptr: none.
    TaskContext* task = nullptr;
};

struct BootVerifyResult {
    std::string point;
    std::string vm;         // the point's VM
    std::string throwaway;  // the transient VM's name
    bool ok = false;
    std::string detail;                   // what failed, or what answered
    std::optional<double> agent_seconds;  // start → agent answered
    std::optional<int> exec_exit_code;
    std::string exec_output;  // tail of stdout + stderr
    double seconds = 0;
};

Result<BootVerifyResult> verify_boot(repo::Repository& repo, const virt::Connection& connection,
                                     const BootVerifyOptions& options);

}  // namespace vmshadow::engine
