// SPDX-License-Identifier: MIT
#pragma once
// The thaw guardian: a separate process that thaws (or resumes) one VM if vmshadow does not
// do so in time — even when vmshadow's whole process group is killed with SIGKILL.
//
// Why a process: a frozen guest holds every write of every application inside it; Windows
// gives up after 10 s (VSS), Linux guests simply hang. Threads die with their process, so
// the only guard that survives `kill -9 -PGID` is a process in its own session.
//
// Protocol (parent → guardian over the guardian's stdin; guardian → parent over its stdout):
//   guardian writes "R\n" once it holds its own libvirt connection and the domain;
//   parent writes 'F' when the freeze (or pause) call returned: the countdown starts;
//   parent writes 'T' when it thawed (resumed) the VM itself: the guardian exits at once;
//   EOF without 'T' (the parent died or gave up): the guardian acts at once;
//   no 'F' within `arm_timeout`, or no 'T' within `release_after` of 'F': the guardian acts.
// Acting = bounded thaw (or resume) attempts, then exit. A guardian serves exactly one
// freeze: it never lingers to thaw a later backup's freeze.

#include <sys/types.h>

#include <chrono>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"

namespace vmshadow::virt {

enum class GuardianAction { thaw, resume };

struct GuardianSpec {
    std::string executable;   // the vmshadow binary (it runs `<exe> __thaw-guardian ...`)
    std::string connect_uri;  // libvirt URI the guardian connects to ("" = default)
    std::string domain_uuid;  // which VM: by UUID, so a rename can't redirect it
    std::string domain_name;  // for messages only
    GuardianAction action = GuardianAction::thaw;
    std::chrono::milliseconds arm_timeout{40000};    // spawn → 'F' at most
    std::chrono::milliseconds release_after{10000};  // 'F' → act, unless 'T' came first
};

// The parent's handle on a running guardian. Movable, not copyable. Destroying it without
// release() lets the guardian act at once (the pipe closes).
class ThawGuardian {
  public:
    // Spawns the guardian in its own session and waits until it is ready.
    static Result<ThawGuardian> start(const GuardianSpec& spec);

    Status armed();     // the freeze (pause) returned: start the countdown
    Status released();  // we thawed (resumed) ourselves: the guardian exits without acting
    pid_t pid() const { return pid_; }

    ThawGuardian(ThawGuardian&&) noexcept;
    ThawGuardian& operator=(ThawGuardian&&) noexcept;
    ~ThawGuardian();

  private:
    ThawGuardian(pid_t pid, UniqueFd to_guardian)
        : pid_(pid), to_guardian_(std::move(to_guardian)) {}
    void reap();

    pid_t pid_ = -1;
    UniqueFd to_guardian_;
    bool released_ = false;
};

// The guardian process itself: runs the protocol above on stdin/stdout. Returns 0 when it
// was released or acted successfully, non-zero when acting failed.
int run_thaw_guardian(const GuardianSpec& spec);

// The path of the running executable (/proc/self/exe), the default guardian executable.
std::string current_executable();

}  // namespace vmshadow::virt
