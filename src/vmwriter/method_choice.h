// SPDX-License-Identifier: MIT
#pragma once
// Method selection: which backup method a VM gets now, and why — the Hyper-V writer's
// choice between a child-VM snapshot and a saved-state backup, mapped onto libvirt.
//
// This module is: a pure function from observed facts (VmFacts) and policy to a method and
// human-readable reasons. It does no I/O, so every rule is unit-tested.
// Rules (DESIGN.md "Method selection"):
//   shut off                                   → offline (disks read directly)
//   running, agent channel present and answering, every mounted guest filesystem
//   freezable, scratch space available         → application
//   otherwise, saved-state backups allowed     → image (the VM is paused while memory is saved)
//   otherwise                                  → crash
//   paused                                     → image if allowed, else crash (no agent runs)
//   a disk file missing, scratch space short, or a state no backup can use → none
// The reasons always say what was missing and what to do about it.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "virt/domain.h"
#include "virt/guest_agent.h"

namespace vmshadow::vmwriter {

enum class BackupMethod { application, image, crash, offline, none };

std::string_view method_name(BackupMethod method);
// Parses "application", "image", "crash", "offline"; nullopt otherwise.
std::optional<BackupMethod> parse_method(std::string_view name);

struct DiskFacts {
    virt::DiskSpec spec;
    std::optional<virt::BlockInfo> sizes;  // absent when libvirt could not read them
    std::string size_error;
    bool backed_up = true;
    std::string skip_reason;      // why not backed up
    bool source_missing = false;  // a file or block device that does not exist
};

struct AgentFacts {
    bool channel = false;       // the VM has an org.qemu.guest_agent.0 channel
    std::string channel_state;  // "connected", "disconnected", "" (VM not running)
    bool answering = false;     // guest-ping answered in time
    std::string error;          // why it did not answer
    std::optional<std::vector<virt::GuestFilesystem>> filesystems;  // when it answered
};

struct ScratchFacts {
    std::string dir;
    std::uint64_t free_bytes = 0;
    std::uint64_t needed_bytes = 0;
    std::string error;  // the directory could not be inspected
};

struct VmFacts {
    std::string name;
    virt::DomainState state = virt::DomainState::nostate;
    std::vector<DiskFacts> disks;
    virt::BootFiles boot;
    AgentFacts agent;
    ScratchFacts scratch;
};

struct MethodPolicy {
    bool allow_saved_state = false;
};

struct MethodChoice {
    BackupMethod method = BackupMethod::none;
    std::vector<std::string> reasons;
    // With method none: why, when a kind says more than "cannot" (an asked-for agent that
    // does not answer is `unavailable`, as README's exit codes say).
    std::optional<ErrorKind> kind = std::nullopt;
};

MethodChoice choose_method(const VmFacts& facts, const MethodPolicy& policy);

// An explicitly asked method (`--method`): the same method back with the reason it can be
// had, or `none` with the causes it cannot (an asked method never silently falls back).
// `image` is allowed when asked for, whatever the saved-state policy says.
MethodChoice check_requested_method(const VmFacts& facts, BackupMethod requested);

// Whether a guest filesystem type can be frozen by qemu-guest-agent (FIFREEZE on Linux,
// VSS on Windows), or needs no freeze because it is read-only by nature.
bool filesystem_is_freezable(std::string_view type);

// Scratch space a live backup of these disks needs on the host: the worst case is every
// cluster of every disk overwritten during the copy, capped at 10 GiB (DESIGN.md's preflight
// rule, whose "2 x expected writes" part needs a write history the first backup lacks).
std::uint64_t scratch_needed(const std::vector<DiskFacts>& disks);

}  // namespace vmshadow::vmwriter
