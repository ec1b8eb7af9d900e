// SPDX-License-Identifier: MIT
#include "engine/nbd_image.h"

#include <fcntl.h>
#include <libnbd.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/child_process.h"
#include "common/process.h"
#include "common/unique_fd.h"

namespace vmshadow::engine {
namespace {

std::string nbd_error_text() {
    const char* e = nbd_get_error();
    return e ? e : "unknown libnbd error";
}

constexpr std::chrono::seconds kQemuImgTimeout{60};
// qemu-nbd flushes a writable image when asked to stop; a slow disk gets this long.
constexpr std::chrono::seconds kServerStopGrace{60};
constexpr std::string_view kServerDirPrefix = "vmshadow-nbd-";

// qemu-img to completion; a failure says `what` failed, the command and its last words.
Result<std::string> run_qemu_img(const std::vector<std::string>& argv, const std::string& what) {
    return with_context(run_checked(argv, kQemuImgTimeout), what);
}

// The vmshadow that made a server directory /tmp/vmshadow-nbd-<pid>.<start time>-XXXXXX
// (the name says it, so a directory is never without an owner); {-1, ""} for a name of an
// older vmshadow (vmshadow-nbd-XXXXXX).
ProcessId server_dir_owner(std::string_view name) {
    name.remove_prefix(kServerDirPrefix.size());
    auto dot = name.find('.'), dash = name.find('-');
    if (dot == std::string_view::npos || dash == std::string_view::npos || dot > dash) return {};
    std::string pid(name.substr(0, dot));
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) return {};
    return {static_cast<pid_t>(std::stol(pid)), std::string(name.substr(dot + 1, dash - dot - 1))};
}

// Server directories whose vmshadow is gone (killed: its qemu-nbd died with it, the
// directory stayed). One of an older vmshadow, whose name says no owner, goes once it is a
// minute old (it is made just before its server starts) and no process serves its socket.
void remove_leftover_server_dirs() {
    std::error_code ec;
    const auto old = std::filesystem::file_time_type::clock::now() - std::chrono::minutes(1);
    for (const auto& entry : std::filesystem::directory_iterator("/tmp", ec)) {
        const std::string name = entry.path().filename().string();
        if (!name.starts_with(kServerDirPrefix) || !entry.is_directory(ec)) continue;
        ProcessId owner = server_dir_owner(name);
        bool leftover =
            owner.pid > 0
                ? !owner.alive()
                : entry.last_write_time(ec) < old &&
                      processes_with_argument("--socket=" + entry.path().string() + "/").empty();
        if (leftover) std::filesystem::remove_all(entry.path(), ec);
    }
}

}  // namespace

Result<std::string> probe_image_format(const std::string& path) {
    if (!std::filesystem::exists(path)) return fail(ErrorKind::not_found, "no such image: " + path);
    auto r = run_qemu_img({"qemu-img", "info", "--output=json", "--", path},
                          "cannot read image " + path);
    if (!r) {
        if (r.error().kind() != ErrorKind::io) return std::unexpected(r.error());
        return fail(ErrorKind::invalid_argument, r.error().message());
    }
    auto j = nlohmann::json::parse(*r, nullptr, false);
    if (j.is_discarded() || !j.contains("format"))
        return fail(ErrorKind::invalid_argument, "qemu-img info gave no format for " + path);
    if (j.contains("backing-filename"))
        return fail(ErrorKind::unsupported,
                    "image " + path + " has a backing file; back up a flattened image");
    return j["format"].get<std::string>();
}

Status create_image(const std::string& path, const std::string& format, std::uint64_t size) {
    auto r =
        run_qemu_img({"qemu-img", "create", "-q", "-f", format, "--", path, std::to_string(size)},
                     "cannot create " + path);
    if (!r) return std::unexpected(r.error());
    return {};
}

bool QemuNbdServer::direct_io_supported(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
    return fd.get() >= 0;
}

Result<std::unique_ptr<QemuNbdServer>> QemuNbdServer::start(const Options& options) {
    remove_leftover_server_dirs();
    std::unique_ptr<QemuNbdServer> s(new QemuNbdServer());
    const ProcessId self = ProcessId::self();
    std::string tmpl = "/tmp/" + std::string(kServerDirPrefix) + std::to_string(self.pid) + "." +
                       self.start_time + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) return fail(ErrorKind::io, "cannot create a directory in /tmp");
    s->dir_ = tmpl;
    s->socket_ = s->dir_ + "/nbd.sock";
    s->log_ = s->dir_ + "/qemu-nbd.log";
    std::vector<std::string> argv{"qemu-nbd",
                                  "--format=" + options.format,
                                  "--socket=" + s->socket_,
                                  "--shared=" + std::to_string(options.connections),
                                  "--persistent",
                                  options.direct ? "--cache=none" : "--cache=writeback"};
    if (options.read_only) argv.push_back("--read-only");
    if (!options.read_only) argv.push_back("--discard=unmap");
    if (!options.bitmap.empty()) argv.push_back("--bitmap=" + options.bitmap);
    argv.push_back(options.image);
    // qemu-nbd allocates a buffer per request and frees it after; above glibc's mmap
    // threshold each one is a fresh mapping, so every request page-faults its buffer in
    // again (bench/RESULTS.md, "Restore (issue 5)": ~0.5 CPU-s of page faults per 1.5 GB
    // written in 1 MiB requests). Keeping such buffers in the heap, and the heap from being
    // trimmed, lets them be reused. Ours go last: glibc takes the last value.
    std::string tunables =
        "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456";
    if (const char* had = std::getenv("GLIBC_TUNABLES"); had && *had)
        tunables = std::string(had) + ":" + tunables;
    // Dies with vmshadow, however vmshadow ends (SIGKILL included); the next start removes
    // the directory such a run leaves.
    auto server = spawn({.argv = argv,
                         .env = {"GLIBC_TUNABLES=" + tunables},
                         .output = s->log_,
                         .dies_with_vmshadow = true});
    if (!server)
        return fail(ErrorKind::unavailable, "qemu-nbd could not be started (install qemu-utils): " +
                                                server.error().message());
    s->server_ = std::move(*server);
    return s;
}

Status QemuNbdServer::stop() {
    Status result;
    if (server_.running()) {
        // qemu-nbd flushes and closes the image on SIGTERM.
        auto code = server_.stop(kServerStopGrace);
        if (!code || *code == 128 + SIGKILL)
            result = fail(ErrorKind::timeout, "qemu-nbd did not stop within " +
                                                  std::to_string(kServerStopGrace.count()) +
                                                  " s of SIGTERM and was killed");
    }
    (void)server_.stop(std::chrono::milliseconds(0));  // reaped, whatever became of it
    if (!dir_.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        dir_.clear();
    }
    return result;
}

QemuNbdServer::~QemuNbdServer() {
    (void)stop();
}

Result<std::unique_ptr<NbdConnection>> NbdConnection::connect_unix(const std::string& socket,
                                                                   bool want_allocation) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        nbd_handle* h = nbd_create();
        if (!h) return fail(ErrorKind::internal, "nbd_create: " + nbd_error_text());
        std::unique_ptr<NbdConnection> c(new NbdConnection(h));
        nbd_set_pread_initialize(h, false);  // buffers are always fully overwritten
        if (want_allocation) nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
        if (nbd_connect_unix(h, socket.c_str()) == 0) {
            int64_t size = nbd_get_size(h);
            if (size < 0) return fail(ErrorKind::unavailable, "NBD size: " + nbd_error_text());
            c->size_ = static_cast<std::uint64_t>(size);
            c->allocation_ =
                want_allocation && nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
            int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
            if (max > 0) c->max_request_ = std::min<std::size_t>(c->max_request_, max);
            return c;
        }
        std::string why = nbd_error_text();
        if (std::chrono::steady_clock::now() > deadline)
            return fail(ErrorKind::unavailable,
                        "cannot connect to NBD server at " + socket + ": " + why);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

NbdConnection::~NbdConnection() {
    nbd_shutdown(h_, 0);
    nbd_close(h_);
}

Status NbdConnection::pread(void* buffer, std::size_t count, std::uint64_t offset) {
    // Many small requests in flight rather than one big one: qemu-nbd allocates a bounce
    // buffer per request, and buffers above glibc's mmap threshold cost it a fresh mapping
    // and page faults each time (measured in bench/RESULTS.md: 128 KiB requests halve
    // qemu-nbd's CPU time against 4 MiB ones).
    std::lock_guard lock(read_mu_);
    const std::size_t request = std::min(kReadRequest, max_request_);
    std::vector<std::pair<int64_t, std::uint64_t>> issued;  // cookie, offset
    issued.reserve(kReadsInFlight);
    Status result;
    auto retire = [&](std::size_t keep) {
        // Waits until at most `keep` requests are outstanding, oldest first. Every issued
        // request is waited for, even after an error: its buffer must outlive it.
        std::size_t done = 0;
        for (; issued.size() - done > keep; ++done) {
            auto [cookie, at] = issued[done];
            int r = 0;
            while ((r = nbd_aio_command_completed(h_, cookie)) == 0)
                if (nbd_poll(h_, -1) < 0) {
                    r = -1;
                    break;
                }
            if (r < 0 && result)
                result = fail(ErrorKind::io,
                              "NBD read at " + std::to_string(at) + ": " + nbd_error_text());
        }
        issued.erase(issued.begin(), issued.begin() + static_cast<std::ptrdiff_t>(done));
    };
    for (std::size_t done = 0; done < count && result;) {
        std::size_t n = std::min(count - done, request);
        int64_t cookie = nbd_aio_pread(h_, static_cast<char*>(buffer) + done, n, offset + done,
                                       NBD_NULL_COMPLETION, 0);
        if (cookie < 0) {
            result = fail(ErrorKind::io,
                          "NBD read at " + std::to_string(offset + done) + ": " + nbd_error_text());
            break;
        }
        issued.emplace_back(cookie, offset + done);
        done += n;
        if (issued.size() >= kReadsInFlight) retire(kReadsInFlight / 2);
    }
    retire(0);
    return result;
}

Status NbdConnection::pwrite(const void* buffer, std::size_t count, std::uint64_t offset) {
    for (std::size_t done = 0; done < count;) {
        std::size_t n = std::min(count - done, max_request_);
        if (nbd_pwrite(h_, static_cast<const char*>(buffer) + done, n, offset + done, 0) != 0)
            return fail(ErrorKind::io,
                        "NBD write at " + std::to_string(offset + done) + ": " + nbd_error_text());
        done += n;
    }
    return {};
}

Status NbdConnection::zero(std::uint64_t offset, std::uint64_t length) {
    // NBD requests carry a 32-bit length: at most 1 GiB each.
    for (std::uint64_t done = 0; done < length;) {
        std::uint64_t n = std::min<std::uint64_t>(length - done, 1ull << 30);
        if (nbd_zero(h_, n, offset + done, 0) != 0)
            return fail(ErrorKind::io,
                        "NBD zero at " + std::to_string(offset + done) + ": " + nbd_error_text());
        done += n;
    }
    return {};
}

Status NbdConnection::flush() {
    if (nbd_flush(h_, 0) != 0) return fail(ErrorKind::io, "NBD flush: " + nbd_error_text());
    return {};
}

Result<std::vector<Extent>> NbdConnection::extents(std::uint64_t offset, std::uint64_t length) {
    std::vector<Extent> out;
    std::uint64_t end = std::min(offset + length, size_);
    if (!allocation_) {
        if (end > offset) out.push_back({offset, end - offset, false});
        return out;
    }
    auto add = [&](std::uint64_t off, std::uint64_t len, bool zero) {
        if (!out.empty() && out.back().zero == zero && out.back().offset + out.back().length == off)
            out.back().length += len;
        else
            out.push_back({off, len, zero});
    };
    std::uint64_t pos = offset;
    while (pos < end) {
        // Requests stay below 4 GiB: libnbd 1.14 has no 64-bit block status.
        std::uint64_t count = std::min<std::uint64_t>(end - pos, 1ull << 30);
        struct Ctx {
            std::uint64_t pos;
            std::uint64_t end;
            std::vector<std::pair<std::uint64_t, std::pair<std::uint64_t, bool>>> got;
        } ctx{pos, end, {}};
        nbd_extent_callback cb{[](void* user, const char* context, uint64_t off, uint32_t* entries,
                                  size_t n, int*) -> int {
                                   auto* c = static_cast<Ctx*>(user);
                                   if (std::string_view(context) != LIBNBD_CONTEXT_BASE_ALLOCATION)
                                       return 0;
                                   for (size_t i = 0; i + 1 < n; i += 2) {
                                       bool zero = entries[i + 1] & LIBNBD_STATE_ZERO;
                                       c->got.push_back({off, {entries[i], zero}});
                                       off += entries[i];
                                   }
                                   return 0;
                               },
                               &ctx, nullptr};
        if (nbd_block_status(h_, count, pos, cb, 0) != 0)
            return fail(ErrorKind::io,
                        "NBD block status at " + std::to_string(pos) + ": " + nbd_error_text());
        std::uint64_t next = pos;
        for (auto& [off, e] : ctx.got) {
            if (off != next || e.first == 0) break;
            std::uint64_t len = std::min(e.first, end - off);
            add(off, len, e.second);
            next = off + len;
            if (next >= end) break;
        }
        if (next == pos) return fail(ErrorKind::io, "NBD server returned no extents");
        pos = next;
    }
    return out;
}

}  // namespace vmshadow::engine
