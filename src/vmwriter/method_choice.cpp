// SPDX-License-Identifier: MIT
#include "vmwriter/method_choice.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "common/byte_size.h"
#include "common/enum_names.h"

namespace vmshadow::vmwriter {
namespace {

constexpr std::uint64_t kGiB = 1ULL << 30;
constexpr std::uint64_t kScratchCap = 10 * kGiB;

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// Problems that rule out an application-consistent backup of a running VM.
std::vector<std::string> application_blockers(const VmFacts& f) {
    std::vector<std::string> out;
    const AgentFacts& a = f.agent;
    if (!a.channel) {
        out.push_back(
            "no guest agent channel: add a virtio channel named "
            "org.qemu.guest_agent.0 and install qemu-guest-agent in the guest");
        return out;
    }
    if (a.channel_state == "disconnected") {
        out.push_back("guest agent not connected: is qemu-guest-agent running in the guest?");
        return out;
    }
    if (!a.answering) {
        out.push_back("guest agent not answering: " + a.error);
        return out;
    }
    if (!a.filesystems || a.filesystems->empty()) {
        out.push_back("the guest agent reports no mounted filesystems to freeze");
        return out;
    }
    for (const auto& fs : *a.filesystems) {
        if (!filesystem_is_freezable(fs.type)) {
            out.push_back("filesystem " + fs.mountpoint + " (" + fs.type +
                          ") cannot be frozen: its data would be only crash-consistent");
        }
    }
    return out;
}

// Problems that rule out any backup now.
std::vector<std::string> hard_blockers(const VmFacts& f, bool live) {
    std::vector<std::string> out;
    for (const auto& d : f.disks) {
        if (d.backed_up && d.source_missing) {
            out.push_back("disk " + d.spec.target + ": " + d.spec.path +
                          " does not exist: restore the file or detach the disk");
        }
    }
    if (live && f.scratch.error.empty() && f.scratch.free_bytes < f.scratch.needed_bytes) {
        out.push_back("scratch directory " + f.scratch.dir + " has " +
                      format_bytes(f.scratch.free_bytes) + " free, a live backup needs " +
                      format_bytes(f.scratch.needed_bytes) +
                      ": free space there or choose another with --scratch-dir");
    } else if (live && !f.scratch.error.empty()) {
        out.push_back("scratch directory: " + f.scratch.error);
    }
    return out;
}

MethodChoice fallback(std::vector<std::string> reasons, const MethodPolicy& policy) {
    if (policy.allow_saved_state) {
        reasons.push_back("saved state allowed: the VM is paused while its memory is saved");
        return {BackupMethod::image, std::move(reasons)};
    }
    reasons.push_back(
        "saved-state backups are off (--allow-saved-state or allow-saved-state "
        "in the config file turns them on)");
    return {BackupMethod::crash, std::move(reasons)};
}

}  // namespace

namespace {

constexpr auto kMethodNames = enum_names<BackupMethod>(
    {
        {BackupMethod::application, "application"},
        {BackupMethod::image, "image"},
        {BackupMethod::crash, "crash"},
        {BackupMethod::offline, "offline"},
        {BackupMethod::none, "none"},
    },
    "none");

}  // namespace

std::string_view method_name(BackupMethod method) {
    return kMethodNames.name(method);
}

std::optional<BackupMethod> parse_method(std::string_view name) {
    auto method = kMethodNames.parse(name);
    if (method == BackupMethod::none) return std::nullopt;  // a result, never a request
    return method;
}

bool filesystem_is_freezable(std::string_view type) {
    // Linux filesystems that implement freeze_fs (FIFREEZE), Windows volumes VSS snapshots,
    // and read-only filesystems that cannot change under a backup.
    static constexpr std::array<std::string_view, 17> kOk = {
        "ext2", "ext3",  "ext4", "xfs",  "btrfs",   "f2fs",     "jfs",   "reiserfs", "nilfs2",
        "gfs2", "ocfs2", "ntfs", "refs", "iso9660", "squashfs", "erofs", "udf"};
    std::string t = lower(type);
    return std::find(kOk.begin(), kOk.end(), t) != kOk.end();
}

std::uint64_t scratch_needed(const std::vector<DiskFacts>& disks) {
    std::uint64_t total = 0;
    for (const auto& d : disks) {
        if (d.backed_up && d.sizes) total += d.sizes->capacity;
    }
    return std::min(total, kScratchCap);
}

MethodChoice choose_method(const VmFacts& f, const MethodPolicy& policy) {
    using virt::DomainState;
    const bool live = f.state == DomainState::running || f.state == DomainState::paused ||
                      f.state == DomainState::blocked;
    if (f.state == DomainState::shutoff) {
        auto blockers = hard_blockers(f, false);
        if (!blockers.empty()) return {BackupMethod::none, std::move(blockers)};
        return {BackupMethod::offline, {"VM is shut off: its disks are read directly"}};
    }
    if (!live) {
        return {BackupMethod::none,
                {"VM is " + std::string(virt::state_name(f.state)) +
                 ": start it or shut it off, then back it up"}};
    }
    if (auto blockers = hard_blockers(f, true); !blockers.empty()) {
        return {BackupMethod::none, std::move(blockers)};
    }
    if (f.state == DomainState::paused) {
        return fallback({"VM is paused: the guest agent cannot run to freeze filesystems"}, policy);
    }
    auto blockers = application_blockers(f);
    if (blockers.empty()) {
        std::size_t n = f.agent.filesystems ? f.agent.filesystems->size() : 0;
        return {BackupMethod::application,
                {"guest agent answers and all " + std::to_string(n) +
                 " mounted filesystem(s) can be frozen"}};
    }
    return fallback(std::move(blockers), policy);
}

MethodChoice check_requested_method(const VmFacts& f, BackupMethod requested) {
    using virt::DomainState;
    const std::string asked = "--method " + std::string(method_name(requested));
    if (requested == BackupMethod::none) return {BackupMethod::none, {"no method asked"}};
    if (f.state == DomainState::shutoff) {
        if (requested != BackupMethod::offline) {
            return {BackupMethod::none,
                    {asked + " needs a running VM and it is shut off: start it, or leave "
                             "--method out for an offline backup"}};
        }
        return choose_method(f, {});
    }
    const bool live = f.state == DomainState::running || f.state == DomainState::paused ||
                      f.state == DomainState::blocked;
    if (!live) {
        return {BackupMethod::none,
                {"VM is " + std::string(virt::state_name(f.state)) + ": " + asked +
                 " needs it running"}};
    }
    if (requested == BackupMethod::offline) {
        return {
            BackupMethod::none,
            {asked + " needs the VM shut off; it is " + std::string(virt::state_name(f.state))}};
    }
    if (auto blockers = hard_blockers(f, true); !blockers.empty()) {
        return {BackupMethod::none, std::move(blockers)};
    }
    switch (requested) {
        case BackupMethod::application: {
            if (f.state == DomainState::paused) {
                return {BackupMethod::none,
                        {asked + ": VM is paused, so its guest agent cannot freeze "
                                 "filesystems: resume it or use --method image"}};
            }
            auto blockers = application_blockers(f);
            if (!blockers.empty()) {
                for (auto& b : blockers) b = asked + ": " + b;
                const bool silent = f.agent.channel && !f.agent.answering;
                return {BackupMethod::none, std::move(blockers),
                        silent ? std::optional(ErrorKind::unavailable) : std::nullopt};
            }
            return {BackupMethod::application,
                    {"asked for; the guest agent answers and every mounted filesystem can "
                     "be frozen"}};
        }
        case BackupMethod::image:
            return {BackupMethod::image, {"asked for: the VM is paused while its memory is saved"}};
        case BackupMethod::crash:
            return {BackupMethod::crash, {"asked for: no freeze, crash-consistent disks"}};
        default:
            break;
    }
    return {BackupMethod::none, {"unknown method"}};
}

}  // namespace vmshadow::vmwriter
