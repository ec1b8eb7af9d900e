// SPDX-License-Identifier: MIT
#pragma once
// Disk image files served over NBD: qemu-nbd as a managed child process, libnbd handles.
//
// This module is: RAII for a qemu-nbd server on a private Unix socket (started by
// common/process.h's spawn, tied to the vmshadow process: it dies with vmshadow however
// vmshadow ends; stopped and reaped in the destructor, within a bounded time; its socket
// directory /tmp/vmshadow-nbd-<pid>.<start time>-* removed then, or by the next start once
// its vmshadow is gone), RAII for a libnbd connection, the image's
// format (from `qemu-img info`), and its allocation map (NBD base:allocation). Images are
// read and written only through QEMU's own block layer: vmshadow parses no qcow2. It is
// not: libvirt's NBD exports (the live-backup engine connects to those itself).
//
// Thread-safety: an NbdConnection may be used from several threads (libnbd serialises
// calls on a handle, and pread, which keeps several requests in flight, takes a mutex); a
// QemuNbdServer belongs to one thread.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/process.h"

struct nbd_handle;

namespace vmshadow::engine {

// "raw", "qcow2", … as qemu-img reports it; not_found when the file does not exist.
Result<std::string> probe_image_format(const std::string& path);
// Creates an image (qemu-img create -f <format>).
Status create_image(const std::string& path, const std::string& format, std::uint64_t size);

class QemuNbdServer {
  public:
    struct Options {
        std::string image;
        std::string format;  // raw, qcow2…
        bool read_only = true;
        unsigned connections = 2;
        // A persistent bitmap of the image to expose as the meta context
        // "qemu:dirty-bitmap:<bitmap>" (qemu-nbd -B); empty: none.
        std::string bitmap;
        // Writes bypass the page cache (qemu-nbd --cache=none, O_DIRECT): a restore of a large
        // disk then neither evicts the host's cache (its running VMs') nor pays to fill it.
        // Only where the file's filesystem takes O_DIRECT (direct_io_supported).
        bool direct = false;
    };
    static Result<std::unique_ptr<QemuNbdServer>> start(const Options& options);
    // Whether `path` (an existing file) can be opened with O_DIRECT: not on tmpfs, say.
    static bool direct_io_supported(const std::string& path);
    ~QemuNbdServer();
    QemuNbdServer(const QemuNbdServer&) = delete;
    QemuNbdServer& operator=(const QemuNbdServer&) = delete;

    const std::string& socket() const { return socket_; }
    // Stops the server and waits for it (flushes a writable image); idempotent. A server that
    // needed SIGKILL (not stopped within 60 s of SIGTERM) is a timeout error.
    Status stop();

  private:
    QemuNbdServer() = default;
    std::string dir_, socket_, log_;
    Child server_;  // dies with vmshadow
};

struct Extent {
    std::uint64_t offset;
    std::uint64_t length;
    bool zero;  // reads as zeros (hole or zero cluster): need not be read
};

class NbdConnection {
  public:
    // Connects to a Unix socket, retrying while the server starts (up to ~10 s).
    static Result<std::unique_ptr<NbdConnection>> connect_unix(const std::string& socket,
                                                               bool want_allocation);
    ~NbdConnection();
    NbdConnection(const NbdConnection&) = delete;
    NbdConnection& operator=(const NbdConnection&) = delete;

    std::uint64_t size() const { return size_; }
    // Reads `count` bytes as requests of at most 128 KiB, up to 32 of them in flight.
    Status pread(void* buffer, std::size_t count, std::uint64_t offset);
    Status pwrite(const void* buffer, std::size_t count, std::uint64_t offset);
    Status flush();
    // Writes zeros to [offset, offset + length) as NBD write-zeroes requests (a qcow2 target
    // records zero clusters, which shadow a backing file, instead of writing data).
    Status zero(std::uint64_t offset, std::uint64_t length);
    // The allocation map of [offset, offset + length), merged and clamped; without
    // base:allocation support everything is reported as data.
    Result<std::vector<Extent>> extents(std::uint64_t offset, std::uint64_t length);
    // Largest single request the server accepts.
    std::size_t max_request() const { return max_request_; }

  private:
    static constexpr std::size_t kReadRequest = 128u << 10;
    static constexpr std::size_t kReadsInFlight = 32;
    explicit NbdConnection(nbd_handle* h) : h_(h) {}
    nbd_handle* h_;
    std::mutex read_mu_;
    std::uint64_t size_ = 0;
    bool allocation_ = false;
    std::size_t max_request_ = 32u << 20;
};

}  // namespace vmshadow::engine
