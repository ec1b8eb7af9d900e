// SPDX-License-Identifier: MIT
// `shadow copy` (shadow_ops.h): the live copy of one disk through a shadow — sparse,
// restartable from its progress file, verified against the shadow at the end.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/atomic_file.h"
#include "common/byte_size.h"
#include "common/os_error.h"
#include "common/test_hook.h"
#include "common/unique_fd.h"
#include "engine/nbd_image.h"
#include "engine/shadow_detail.h"
#include "engine/shadow_ops.h"
#include "repo/crypto.h"
#include "virt/nbd_export.h"

namespace vmshadow::engine {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Data written between two flushed progress records.
constexpr std::uint64_t kStretch = 32ull << 20;
constexpr std::size_t kHashBlock = 4u << 20;

struct CopyProgress {
    std::string shadow, vm, disk, format;
    std::uint64_t size = 0, done = 0;
};

Status save_progress(const fs::path& dest, const CopyProgress& p) {
    json j = {{"shadow", p.shadow}, {"vm", p.vm},     {"disk", p.disk},
              {"format", p.format}, {"size", p.size}, {"done", p.done}};
    return write_file_atomically(copy_progress_path(dest), j.dump() + "\n", 0600);
}

Result<CopyProgress> load_progress(const fs::path& dest) {
    fs::path path = copy_progress_path(dest);
    std::ifstream in(path);
    if (!in)
        return fail(ErrorKind::not_found, "--resume: " + path.string() +
                                              " does not exist: there is no interrupted copy "
                                              "to " +
                                              dest.string() + " (copy without --resume)");
    std::stringstream text;
    text << in.rdbuf();
    json j = json::parse(text.str(), nullptr, false);
    try {
        CopyProgress p{j.at("shadow").get<std::string>(), j.at("vm").get<std::string>(),
                       j.at("disk").get<std::string>(),   j.at("format").get<std::string>(),
                       j.at("size").get<std::uint64_t>(), j.at("done").get<std::uint64_t>()};
        if (p.done > p.size || !valid_shadow_id(p.shadow))
            throw json::other_error::create(0, "", nullptr);
        return p;
    } catch (const json::exception&) {
        return fail(ErrorKind::corruption, path.string() +
                                               " is not a shadow copy's progress file: delete "
                                               "it and " +
                                               dest.string() + " and copy again");
    }
}

// Where the copy goes: a sparse raw file, or a qcow2 image written through qemu-nbd.
class CopyTarget {
  public:
    static Result<std::unique_ptr<CopyTarget>> open(const fs::path& dest, const std::string& format,
                                                    std::uint64_t size, bool create) {
        auto t = std::unique_ptr<CopyTarget>(new CopyTarget());
        t->path_ = dest.string();
        if (format == "raw") {
            int flags = create ? O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC : O_RDWR | O_CLOEXEC;
            t->fd_ = UniqueFd(::open(dest.c_str(), flags, 0600));
            if (!t->fd_) return fail(os_error("open " + dest.string(), errno));
            if (create && ::ftruncate(t->fd_.get(), static_cast<off_t>(size)) != 0)
                return fail(os_error("size " + dest.string(), errno));
            return t;
        }
        if (create) {
            if (auto st = create_image(dest.string(), "qcow2", size); !st) return fail(st.error());
        } else {
            auto probed = probe_image_format(dest.string());
            if (!probed) return fail(probed.error());
            if (*probed != "qcow2")
                return fail(ErrorKind::conflict, dest.string() + " is " + *probed +
                                                     ", not the qcow2 the copy was writing");
        }
        auto server = QemuNbdServer::start({dest.string(), "qcow2", false, 1, ""});
        if (!server) return fail(server.error());
        t->server_ = std::move(*server);
        auto conn = NbdConnection::connect_unix(t->server_->socket(), false);
        if (!conn) return fail(conn.error());
        t->conn_ = std::move(*conn);
        return t;
    }

    Status write(std::uint64_t offset, std::span<const std::byte> data) {
        if (conn_) return conn_->pwrite(data.data(), data.size(), offset);
        for (std::size_t done = 0; done < data.size();) {
            ssize_t n = ::pwrite(fd_.get(), data.data() + done, data.size() - done,
                                 static_cast<off_t>(offset + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail(os_error("write " + path_, errno));
            done += static_cast<std::size_t>(n);
        }
        return {};
    }

    Status flush() {
        if (conn_) return conn_->flush();
        if (::fdatasync(fd_.get()) != 0) return fail(os_error("flush " + path_, errno));
        return {};
    }

    Status read(std::uint64_t offset, std::span<std::uint8_t> out) {
        if (conn_) return conn_->pread(out.data(), out.size(), offset);
        for (std::size_t done = 0; done < out.size();) {
            ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done,
                                static_cast<off_t>(offset + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail(os_error("read " + path_, n == 0 ? EIO : errno));
            done += static_cast<std::size_t>(n);
        }
        return {};
    }

    Status close() {
        conn_.reset();
        if (server_) return server_->stop();
        return {};
    }

  private:
    CopyTarget() = default;
    std::string path_;
    UniqueFd fd_;
    std::unique_ptr<QemuNbdServer> server_;
    std::unique_ptr<NbdConnection> conn_;
};

Result<virt::NbdExport> connect_export(const ShadowRecord& shadow, const std::string& disk) {
    auto d = std::find_if(shadow.disks.begin(), shadow.disks.end(),
                          [&](const ShadowDiskRecord& x) { return x.target == disk; });
    if (d == shadow.disks.end())
        return fail(ErrorKind::not_found, "shadow " + shadow.id + " has no disk " + disk);
    return virt::NbdExport::connect(
        {shadow.socket, d->export_name, "", "vm '" + shadow.vm + "', disk " + disk});
}

// Copies the data ranges from p.done on, recording progress after each flushed stretch.
Status copy_ranges(virt::NbdExport& source, CopyTarget& target, const fs::path& dest,
                   CopyProgress& p, TaskContext& task, std::uint64_t& copied) {
    std::uint64_t pending = 0;
    auto record = [&](std::uint64_t done) -> Status {
        if (done <= p.done) return {};
        if (auto st = target.flush(); !st) return st;
        p.done = done;
        if (auto st = save_progress(dest, p); !st) return st;
        pending = 0;
        task.bytes_done(done);
        test_pause_point("shadow-copy-stretch");
        return task.check_cancel("shadow copy");
    };
    auto sink = [&](std::uint64_t offset, std::span<const std::byte> data) -> Status {
        copied += data.size();
        return target.write(offset, data);
    };
    while (true) {
        auto window = source.next_ranges();
        if (!window) return fail(window.error());
        if (!*window) return {};
        for (auto range : **window) {
            if (range.end() <= p.done || range.kind == virt::ExportRange::Kind::zero) continue;
            if (range.offset < p.done) {
                range.length = range.end() - p.done;
                range.offset = p.done;
            }
            for (std::uint64_t at = range.offset; at < range.end();) {
                std::uint64_t n = std::min<std::uint64_t>(range.end() - at, kStretch - pending);
                virt::ExportRange piece{at, n, virt::ExportRange::Kind::data};
                if (auto st = source.read({piece}, sink); !st) return st;
                at += n;
                pending += n;
                if (pending >= kStretch) {
                    if (auto st = record(at); !st) return st;
                }
            }
        }
        if (auto st = record(source.walked()); !st) return st;
    }
}

void hash_zeros(repo::Sha256Stream& hash, std::uint64_t length) {
    static const std::vector<std::uint8_t> zeros(1u << 20, 0);
    for (std::uint64_t done = 0; done < length;) {
        std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(length - done, zeros.size()));
        hash.update({zeros.data(), n});
        done += n;
    }
}

Result<std::string> hash_export(const ShadowRecord& shadow, const std::string& disk) {
    auto source = connect_export(shadow, disk);
    if (!source) return fail(source.error());
    auto ranges = source->all_ranges();
    if (!ranges) return fail(ranges.error());
    repo::Sha256Stream hash;
    for (const auto& r : *ranges) {
        if (r.kind == virt::ExportRange::Kind::zero) {
            hash_zeros(hash, r.length);
            continue;
        }
        auto st = source->read({r}, [&](std::uint64_t, std::span<const std::byte> data) -> Status {
            hash.update({reinterpret_cast<const std::uint8_t*>(data.data()), data.size()});
            return {};
        });
        if (!st) return fail(st.error());
    }
    return hash.finish().hex();
}

Result<std::string> hash_target(CopyTarget& target, std::uint64_t size) {
    repo::Sha256Stream hash;
    std::vector<std::uint8_t> block(kHashBlock);
    for (std::uint64_t at = 0; at < size;) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size - at, block.size()));
        if (auto st = target.read(at, {block.data(), n}); !st) return fail(st.error());
        hash.update({block.data(), n});
        at += n;
    }
    return hash.finish().hex();
}

// The shadow an interrupted copy was using, if it still is the same instant.
Result<ShadowRecord> shadow_to_resume(const ShadowSettings& settings, const ShadowCopyRequest& r,
                                      const CopyProgress& p, ShadowNotes& notes) {
    {
        auto lock = ShadowDirLock::acquire(settings.shadow_dir);
        if (!lock) return fail(lock.error());
        notes = sweep_shadows(settings);
    }
    if (p.vm != r.vm || p.disk != r.disk || p.format != r.format)
        return fail(ErrorKind::conflict, "--resume: " + copy_progress_path(r.dest).string() +
                                             " is a copy of vm '" + p.vm + "' disk " + p.disk +
                                             " as " + p.format + ", not of vm '" + r.vm +
                                             "' disk " + r.disk + " as " + r.format);
    std::string again = ": continuing from another instant would make a wrong copy; delete " +
                        r.dest.string() + " and " + copy_progress_path(r.dest).string() +
                        " and copy again";
    auto shadow = load_shadow(settings.shadow_dir, p.shadow);
    if (!shadow)
        return fail(ErrorKind::conflict, "--resume: shadow " + p.shadow + " is gone" + again);
    if (!shadow->active())
        return fail(ErrorKind::conflict, "--resume: shadow " + p.shadow + " was dropped (" +
                                             shadow->dropped_why + ")" + again);
    return *shadow;
}

// A copy that failed midway: when the watcher dropped its shadow (the guest wrote more than
// the diff area's maximum), --resume cannot help, and the message says so.
Error copy_failed(const ShadowSettings& settings, const std::string& id, const fs::path& dest,
                  const Error& error, const std::string& keep) {
    auto shadow = load_shadow(settings.shadow_dir, id);
    if (shadow && !shadow->active())
        return Error(ErrorKind::unavailable, error.message() + "; shadow " + id + " was dropped (" +
                                                 shadow->dropped_why + "): delete " +
                                                 dest.string() + " and " +
                                                 copy_progress_path(dest).string() +
                                                 " and copy again, with a larger --max-size");
    return Error(error.kind(), error.message() + keep);
}

}  // namespace

fs::path copy_progress_path(const fs::path& dest) {
    return fs::path(dest.string() + ".vmshadow-copy");
}

Result<ShadowCopyReport> copy_through_shadow(const ShadowSettings& settings,
                                             const ShadowCopyRequest& r, TaskContext& task) {
    if (r.format != "raw" && r.format != "qcow2")
        return fail(ErrorKind::invalid_argument, "--format must be qcow2 or raw, not " + r.format);
    ShadowCopyReport report;
    CopyProgress progress;
    ShadowRecord shadow;
    std::error_code ec;
    if (r.resume) {
        auto p = load_progress(r.dest);
        if (!p) return fail(p.error());
        progress = *p;
        auto s = shadow_to_resume(settings, r, progress, report.notes);
        if (!s) return fail(s.error());
        shadow = std::move(*s);
    } else {
        if (fs::exists(r.dest, ec) || fs::exists(copy_progress_path(r.dest), ec))
            return fail(ErrorKind::conflict,
                        r.dest.string() +
                            " exists: remove it, or continue an interrupted copy "
                            "with --resume");
        auto created = create_shadow(settings, {r.vm, {r.disk}, r.max_size, ""});
        if (!created) return fail(created.error());
        shadow = std::move(created->record);
        report.notes = std::move(created->notes);
        progress = {shadow.id, r.vm, r.disk, r.format, shadow.disks.front().size, 0};
        if (auto st = save_progress(r.dest, progress); !st) {
            (void)delete_shadows(settings, shadow.id);
            return fail(st.error());
        }
    }
    report.shadow_id = shadow.id;
    report.consistency = shadow.consistency;
    report.consistency_reason = shadow.consistency_reason;
    report.size = progress.size;
    report.resumed_at = progress.done;
    const std::string keep = "; shadow " + shadow.id + " and " +
                             copy_progress_path(r.dest).string() +
                             " are kept: add --resume to continue, or `vmshadow shadow delete " +
                             shadow.id + "` to give up";

    auto target = CopyTarget::open(r.dest, r.format, progress.size, !r.resume);
    if (!target && !r.resume) {
        // Nothing was copied: leave nothing behind.
        (void)delete_shadows(settings, shadow.id);
        fs::remove(copy_progress_path(r.dest), ec);
    }
    if (!target) return fail(target.error().with_context("shadow copy"));
    auto source = connect_export(shadow, r.disk);
    if (!source) return fail(Error(source.error().kind(), source.error().message() + keep));
    if (source->size() != progress.size)
        return fail(ErrorKind::conflict, "shadow " + shadow.id + "'s disk is " +
                                             std::to_string(source->size()) + " bytes, the copy " +
                                             std::to_string(progress.size));
    task.phase("copy", progress.size);
    task.set_item(r.disk);
    task.bytes_done(progress.done);
    if (auto st = copy_ranges(*source, **target, r.dest, progress, task, report.data_copied); !st)
        return fail(copy_failed(settings, shadow.id, r.dest, st.error(), keep));

    task.phase("verify", 0);
    auto expected = hash_export(shadow, r.disk);
    if (!expected) return fail(Error(expected.error().kind(), expected.error().message() + keep));
    auto actual = hash_target(**target, progress.size);
    Status closed = (*target)->close();
    if (!actual) return fail(Error(actual.error().kind(), actual.error().message() + keep));
    if (!closed) return fail(Error(closed.error().kind(), closed.error().message() + keep));
    auto deleted = delete_shadows(settings, shadow.id);
    fs::remove(copy_progress_path(r.dest), ec);
    if (*actual != *expected)
        return fail(ErrorKind::corruption, r.dest.string() + " differs from shadow " + shadow.id +
                                               " (SHA-256 " + *actual + ", the shadow's " +
                                               *expected + "): delete it and copy again");
    if (!deleted) return fail(deleted.error());
    report.sha256 = *expected;
    return report;
}

}  // namespace vmshadow::engine
