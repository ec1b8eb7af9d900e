// SPDX-License-Identifier: MIT
#pragma once
// LabGuest: a real, uniquely named TCG guest for integration tests, built from the cached
// lab image (tests/lab/build-guest.sh) and defined by tests/lab/new-guest.sh, the one
// definition of a lab guest that the README demo uses too.
//
// Contract:
// - create() defines a domain named vmshadow-test-<test_name>-<pid>-<random> whose files live
//   in <run_dir()>/<name>/. The destructor ALWAYS destroys the domain (by name, so a domain
//   a test undefined and redefined goes too), undefines it with its snapshot, checkpoint,
//   managed-save and NVRAM metadata, and removes the directory: a failing test leaves
//   nothing. Leftovers of crashed test processes are removed by reap_stale(), which
//   create() runs once per process.
// - The guest's own disk (vda) holds everything but the virtio drivers: a guest whose agent
//   answers proves that disk is intact.
// - With the workload on, /var/lib/lab/db.sqlite (WAL) gets one committed row with the next
//   id every ~0.25 s; /run/lab/last-id is the last acknowledged commit. The guest starts
//   the workload before its agent: once the agent answers, the workload runs. The guest's
//   /etc/qemu/fsfreeze-hook pauses the writer and empties the WAL on freeze, and releases
//   it on thaw; /run/lab/events logs "paused N"/"resumed N", /var/log/fsfreeze-hook.log
//   the time each freeze took.
// - Every agent call is bounded by its timeout: the domain's agent response timeout is set
//   to it for the call, because libvirt otherwise syncs with the agent for 5 s whatever the
//   command's own timeout says; it is reset to libvirt's default afterwards.
// - Environment: VMSHADOW_LAB_DIR (the directory build-guest.sh prints; when unset, the
//   fixture runs build-guest.sh), VMSHADOW_LAB_RUN_DIR (default /var/tmp/vmshadow-lab-run),
//   LIBVIRT_DEFAULT_URI (default qemu:///system).
// Not thread-safe: one thread per LabGuest. Movable, not copyable.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "virt/connection.h"
#include "virt/domain.h"

namespace vmshadow::lab {

using namespace std::chrono_literals;

enum class AgentMode {
    on,    // qemu-ga runs and answers
    off,   // qemu-ga is not started (the channel, if any, stays disconnected)
    hang,  // qemu-ga opened the port, then was SIGSTOPped: connected, never answers
};

struct DataDisk {
    enum class Kind {
        ext4,   // mounted at /data/vdX, freezable
        vfat,   // mounted at /data/vdX, cannot be frozen (FIFREEZE: EOPNOTSUPP)
        blank,  // no filesystem, not mounted
    };
    Kind kind = Kind::ext4;
    std::string size = "64M";  // as qemu-img takes it
};

struct GuestOptions {
    bool agent_channel = true;  // the org.qemu.guest_agent.0 virtio channel
    AgentMode agent = AgentMode::on;
    bool workload = false;
    std::vector<DataDisk> data_disks{};  // vdb, vdc, ... in this order; stored as qcow2
    bool nic = false;                    // a virtio NIC on the lab network (vmshadow-lab)
    std::string root_format = "qcow2";   // or "raw"
    int memory_mib = 256;
};

// The built lab guest (VMSHADOW_LAB_DIR, else build-guest.sh's answer), found once.
Result<std::filesystem::path> lab_dir();
// Where guests' directories are created.
std::filesystem::path run_dir();
// The libvirt URI the lab uses.
std::string lab_uri();

// Destroys, undefines and deletes every vmshadow-test-* guest whose creating process is
// gone. Guests of live processes (other test runs) are left alone.
Status reap_stale();

class LabGuest {
  public:
    using Clock = std::chrono::steady_clock;

    static Result<LabGuest> create(const GuestOptions& options, std::string_view test_name);

    LabGuest(LabGuest&& other) noexcept;
    LabGuest& operator=(LabGuest&& other) noexcept;
    LabGuest(const LabGuest&) = delete;
    LabGuest& operator=(const LabGuest&) = delete;
    ~LabGuest();

    Status start();
    // Polls guest-ping until it answers. Fails early (with the serial log's tail) when the
    // domain stops running, and at once (unsupported) when it has no agent channel.
    Status wait_for_agent(std::chrono::milliseconds timeout = 120s);
    // Waits until the serial log contains `text` (e.g. "lab: ready", "lab: agent stopped").
    Status wait_for_serial(std::string_view text, std::chrono::milliseconds timeout = 120s);

    // One agent command, e.g. {"execute":"guest-ping"}; returns the JSON text of "return".
    Result<std::string> agent_command(const std::string& json, std::chrono::seconds timeout = 10s);
    // Runs `/bin/sh -c shell_command` in the guest (guest-exec); returns its stdout. A
    // non-zero exit fails with its stderr in the message.
    Result<std::string> exec(const std::string& shell_command,
                             std::chrono::milliseconds timeout = 30s);
    // Reads a guest file through guest-file-open/read/close (no process started).
    Result<std::string> read_file(const std::string& guest_path);
    // The id of the workload's last committed row (/run/lab/last-id).
    Result<std::int64_t> last_committed_row();

    // Destroys and undefines the domain and removes the directory now, reporting failures.
    // The destructor does the same and ignores them.
    Status remove();

    const std::string& name() const { return name_; }
    const std::filesystem::path& dir() const { return dir_; }
    std::filesystem::path serial_log() const { return dir_ / "serial.log"; }
    // The serial log's text so far (for failure messages: its tail).
    std::string serial_output(std::size_t max_tail = 4000) const;
    // Host file of a disk: "vda" (root.qcow2 / root.raw), "vdb" (data-vdb.qcow2), ...
    std::filesystem::path disk_path(std::string_view target) const;
    const virt::Domain& domain() const { return *domain_; }
    const virt::Connection& connection() const { return *conn_; }

  private:
    LabGuest(std::string name, std::filesystem::path dir, std::string root_format,
             virt::Connection conn)
        : name_(std::move(name)),
          dir_(std::move(dir)),
          root_format_(std::move(root_format)),
          conn_(std::move(conn)) {}

    std::string name_;  // empty: moved from or removed
    std::filesystem::path dir_;
    std::string root_format_;
    std::optional<virt::Connection> conn_;
    std::optional<virt::Domain> domain_;
};

// Reads a file out of an ext4 disk image (qcow2 or raw) on the host, also while a running
// VM has it open (qemu-img -U): what a backup of that disk taken now would contain.
// Reliable while the guest is frozen, shut off, or when the image is a copy.
Result<std::string> read_file_from_image(const std::filesystem::path& image,
                                         const std::string& guest_path);

// max(id) of the workload's table in a SQLite database file on the host (opened immutable,
// so a lone main file copied out of an image is read as it is, WAL ignored).
Result<std::int64_t> sqlite_max_row(const std::filesystem::path& db_file);

}  // namespace vmshadow::lab
