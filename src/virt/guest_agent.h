// SPDX-License-Identifier: MIT
#pragma once
// GuestAgent: calls to qemu-guest-agent inside one VM, each bounded by a timeout.
//
// This module is: ping, filesystem info and fsfreeze freeze/thaw/status through libvirt.
// Every call sets the domain's agent response timeout first (virDomainAgentSetResponseTimeout),
// so a hung agent costs at most that long and can never block a later thaw, and sets it back
// to libvirt's default (wait forever) when the call returns. A caller that makes several calls
// in a row (a freeze and its thaw) holds the timeout once instead (TimeoutHold): the calls made
// under a hold set nothing themselves, so no round trip to libvirtd sits between a freeze
// returning and its thaw. libvirt can't tell us the value it had before; a value another tool
// set is therefore reset too.
// This module is not: the policy of when to freeze, or the guarantee that a frozen guest is
// thawed (see freeze_guard.h).
//
// Errors: `unavailable` when there is no agent channel or the agent does not answer in time,
// with a message naming the VM and the call; a freeze the guest's freeze hook refused is
// `cancelled` (a veto by the guest), and says so.

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "virt/domain.h"

namespace vmshadow::virt {

struct GuestFilesystem {
    std::string mountpoint;          // "/", "/data"
    std::string device;              // guest device name, e.g. "vdb1"
    std::string type;                // "ext4", "vfat", "NTFS"
    std::vector<std::string> disks;  // host disk targets it lives on ("vda"), when known
};

enum class FreezeStatus { thawed, frozen };

// What a command run in the guest (guest-exec) did.
struct GuestExecResult {
    int exit_code = -1;  // -1: killed by a signal
    std::string out;     // stdout, as far as the agent captured it
    std::string err;
};

class GuestAgent {
  public:
    using Seconds = std::chrono::seconds;

    // The domain must outlive the agent.
    explicit GuestAgent(const Domain& domain, Seconds timeout = Seconds(5))
        : domain_(domain), timeout_(timeout) {}

    Status ping() const;
    Result<std::vector<GuestFilesystem>> filesystems() const;
    // Freezes every freezable filesystem; returns how many were frozen.
    Result<int> freeze() const;
    // Thaws; returns how many were thawed by this call (0: nothing was frozen).
    Result<int> thaw() const;
    Result<FreezeStatus> freeze_status() const;
    // Runs `/bin/sh -c shell_command` in the guest and waits up to `limit` for it to exit
    // (timeout: the command may still run in the guest).
    Result<GuestExecResult> exec(const std::string& shell_command, Seconds limit) const;

    void set_timeout(Seconds timeout) { timeout_ = timeout; }

    // The domain's agent response timeout, set to this agent's timeout for as long as the
    // hold lives; destroying it sets libvirt's default back, unless keep() was called (the
    // thaw guardian acting while vmshadow may still thaw: vmshadow's own hold resets it).
    // Movable; the domain must outlive it.
    class TimeoutHold {
      public:
        TimeoutHold(TimeoutHold&& other) noexcept
            : domain_(std::exchange(other.domain_, nullptr)) {}
        TimeoutHold& operator=(TimeoutHold&&) = delete;
        ~TimeoutHold();
        void keep() { domain_ = nullptr; }

      private:
        friend class GuestAgent;
        explicit TimeoutHold(virDomainPtr domain) : domain_(domain) {}
        virDomainPtr domain_;
    };
    Result<TimeoutHold> hold_timeout() const;
    // The same calls bounded by the caller's hold (which must be this domain's).
    Result<int> freeze(const TimeoutHold& hold) const;
    Result<int> thaw(const TimeoutHold& hold) const;
    Result<FreezeStatus> freeze_status(const TimeoutHold& hold) const;

  private:
    Result<std::string> command(const std::string& json_command, const char* what) const;
    Result<std::string> command(const TimeoutHold& hold, const std::string& json_command,
                                const char* what) const;

    const Domain& domain_;
    Seconds timeout_;
};

}  // namespace vmshadow::virt
