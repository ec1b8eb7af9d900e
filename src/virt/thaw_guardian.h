// SPDX-License-Identifier: MIT
#pragma once
// The thaw guardian: a separate process that thaws (or resumes) one VM if vmshadow does not
// do so in time — even when vmshadow's whole process group is killed with SIGKILL.
//
// Why a process: a frozen guest holds every write of every application inside it; Windows
// gives up after 10 s (VSS), Linux guests simply hang. Threads die with their process, so
// the only guard that survives `kill -9 -PGID` is a process in its own session.
//
// Protocol (parent → guardian over the guardian's stdin; guardian → parent over its stdout;
// plus one shared word):
//   guardian writes "R\n" once it holds its own libvirt connection and the domain;
//   parent stores the time the freeze (or pause) call returned in a word of shared memory
//     (a memfd the guardian maps, its fd 3): a plain store, no system call and no wake-up,
//     so arming costs the freeze window nothing. The guardian looks at the word only when a
//     deadline could have passed: it sleeps `release_after` from its start (a freeze cannot
//     have returned earlier), then until `release_after` after the stored time — or, while
//     nothing is stored yet, another `release_after` from now, since a freeze returning
//     later has a later deadline;
//   parent writes 'T' when it thawed (resumed) the VM itself: the guardian exits at once;
//   EOF without 'T' (the parent died or gave up): the guardian acts at once;
//   nothing stored within `arm_timeout`, or no 'T' within `release_after` of the stored
//   time: the guardian acts.
// Acting a thaw = thaw, then ask guest-fsfreeze-status, again and again until the agent
// answers "thawed" (or `settle_limit` passes, or the VM stops). Once a freeze was requested it
// may land long after vmshadow gave up on it: the guest's freeze hook runs inside the agent's
// freeze command, and qemu-ga runs one command at a time, so a thaw or status query sent
// meanwhile waits behind the freeze. An answer "thawed" therefore comes after any freeze
// sent before it and proves the guest thawed for good; a thaw that merely timed out proves
// nothing. Acting a resume = bounded resume attempts. A guardian serves exactly one freeze:
// it never lingers to thaw a later backup's freeze.

#include <sys/types.h>

#include <chrono>
#include <string>

#include "common/error.h"
#include "common/process.h"
#include "common/unique_fd.h"

namespace vmshadow::virt {

enum class GuardianAction { thaw, resume };

// How long a guardian keeps thawing a guest until its agent reports "thawed" (documented in
// docs/ARCHITECTURE.md, "Freezing safely").
inline constexpr std::chrono::minutes kGuardianSettleLimit{10};

struct GuardianSpec {
    std::string executable;   // the vmshadow binary (it runs `<exe> __thaw-guardian ...`)
    std::string connect_uri;  // libvirt URI the guardian connects to ("" = default)
    std::string domain_uuid;  // which VM: by UUID, so a rename can't redirect it
    std::string domain_name;  // for messages only
    GuardianAction action = GuardianAction::thaw;
    std::chrono::milliseconds arm_timeout{40000};    // spawn → armed at most
    std::chrono::milliseconds release_after{10000};  // armed → act, unless 'T' came first
    // Acting a thaw: how long to keep thawing until the agent reports "thawed" (a freeze
    // hook may hold the agent for minutes; the freeze lands when it returns).
    std::chrono::milliseconds settle_limit{kGuardianSettleLimit};
    int armed_fd = -1;  // guardian side: the shared word's memfd (-1: only arm_timeout)
};

// The parent's handle on a running guardian. Movable, not copyable. Destroying it without
// release() lets the guardian act at once (the pipe closes).
class ThawGuardian {
  public:
    using Clock = std::chrono::steady_clock;

    // Spawns the guardian in its own session and waits until it is ready.
    static Result<ThawGuardian> start(const GuardianSpec& spec);

    // The freeze (pause) returned at `at`: the countdown runs from there. A store into
    // shared memory: cheap enough for the freeze window, and it cannot fail.
    void armed(Clock::time_point at) noexcept;
    Status released();  // we thawed (resumed) ourselves: the guardian exits without acting
    // Whether the guardian process still runs (checked before freezing).
    bool alive();
    pid_t pid() const { return child_.id().pid; }

    ThawGuardian(ThawGuardian&&) noexcept;
    ThawGuardian& operator=(ThawGuardian&&) noexcept;
    ~ThawGuardian();

  private:
    ThawGuardian(Child child, UniqueFd to_guardian)
        : child_(std::move(child)), to_guardian_(std::move(to_guardian)) {}
    void reap();
    void unmap();

    Child child_;  // own session, not tied to vmshadow: it must act after vmshadow died
    UniqueFd to_guardian_;
    void* shared_ = nullptr;  // the armed word (std::atomic<std::int64_t>, steady-clock ns)
    bool released_ = false;
};

// The guardian process itself: runs the protocol above on stdin/stdout. Returns 0 when it
// was released or acted successfully, non-zero when acting failed.
int run_thaw_guardian(const GuardianSpec& spec);

// The path of the running executable (/proc/self/exe), the default guardian executable.
std::string current_executable();

}  // namespace vmshadow::virt
