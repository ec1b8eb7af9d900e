// SPDX-License-Identifier: MIT
// nbdkit-vmshadow-plugin.so: serves one disk of one restore point over NBD.
//
//   nbdkit [-f] [-r] -U SOCKET /path/to/nbdkit-vmshadow-plugin.so
//       repo=PATH|s3:URL point=ID [disk=NAME] [overlay=FILE] [password-file=FILE]
//
// A repository on S3 is opened with the options in the environment
// (repo::storage_options_from_environment: VMSHADOW_S3_*, AWS_* credentials), so no secret
// is ever on nbdkit's command line.
//
// Read-only unless overlay=FILE is given; then writes go to FILE (+ FILE.map, see
// overlay.h) and reads see them; the repository never changes. The plugin holds the
// repository's shared lock from start-up to exit, so forget/prune/gc wait (exit 7). Holes
// are reported as holes (extents), multi-conn is safe (one process, one disk state), and
// flush makes overlay writes durable. Encrypted repositories: $VMSHADOW_PASSWORD or
// password-file=FILE. docs/EXPORT.md has the rest.
//
// Lifecycle: get_ready (before nbdkit forks into the background) opens everything, so a
// wrong point or password is an error on the terminal and a non-zero exit; after_fork
// reopens in the daemon when nbdkit forked, so the lock file names the serving process.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "export/served_disk.h"

namespace {

using vmshadow::ErrorKind;
using vmshadow::Status;
using vmshadow::exporter::ServedDisk;
using vmshadow::exporter::ServeOptions;

ServeOptions g_options;
std::unique_ptr<ServedDisk> g_served;
pid_t g_served_pid = -1;

int error_number(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::invalid_argument:
            return EINVAL;
        case ErrorKind::unsupported:
            return EROFS;
        case ErrorKind::permission:
            return EPERM;
        default:
            return EIO;
    }
}

// Logs the error (with its kind, which `vmshadow mount` reads back) and sets errno.
int report(const vmshadow::Error& error) {
    nbdkit_error("%s [%s]", error.message().c_str(),
                 std::string(vmshadow::kind_name(error.kind())).c_str());
    nbdkit_set_error(error_number(error.kind()));
    return -1;
}

int check(const Status& s) {
    return s ? 0 : report(s.error());
}

// A repository's location: a local path made absolute, an "s3:…" location as given.
std::string repository(const char* value) {
    if (std::string(value).starts_with("s3:")) return value;
    char* path = nbdkit_absolute_path(value);
    if (!path) return {};
    std::string out(path);
    std::free(path);
    return out;
}

std::string absolute(const char* value) {
    char* path = nbdkit_absolute_path(value);
    if (!path) return {};
    std::string out(path);
    std::free(path);
    return out;
}

int vs_config(const char* key, const char* value) {
    std::string k(key);
    if (k == "repo") {
        g_options.repo = repository(value);
    } else if (k == "point") {
        g_options.point = value;
    } else if (k == "disk") {
        g_options.disk = value;
    } else if (k == "overlay") {
        g_options.overlay = absolute(value);
    } else if (k == "owner") {
        g_options.operation = std::string("nbd export for ") + value;
    } else if (k == "password-file") {
        g_options.password_file = absolute(value);
    } else {
        nbdkit_error("unknown parameter '%s' (see nbdkit %s --help)", key, "vmshadow");
        return -1;
    }
    return 0;
}

int vs_config_complete() {
    if (g_options.repo.empty())
        if (const char* env = std::getenv("VMSHADOW_REPO"); env && *env)
            g_options.repo = repository(env);
    if (g_options.repo.empty() || g_options.point.empty()) {
        nbdkit_error("repo=PATH and point=ID are required");
        return -1;
    }
    g_options.storage = vmshadow::repo::storage_options_from_environment();
    // Retries and throttling of the object store go to nbdkit's log.
    g_options.storage.log = [](const std::string& line) { nbdkit_debug("%s", line.c_str()); };
    return 0;
}

int open_served() {
    auto served = ServedDisk::open(g_options);
    if (!served) return report(served.error());
    g_served = std::move(*served);  // the previous one (if any) goes after the new lock is held
    g_served_pid = ::getpid();
    nbdkit_debug("serving restore point %s disk %s (%s)", g_served->point().id.hex().c_str(),
                 g_served->record().name.c_str(),
                 g_options.overlay.empty() ? "read-only" : "overlay");
    return 0;
}

int vs_get_ready() {
    return open_served();
}

int vs_after_fork() {
    if (g_served && g_served_pid == ::getpid()) return 0;
    return open_served();
}

void vs_cleanup() {
    g_served.reset();
}

void vs_unload() {
    g_served.reset();
}

void* vs_open(int /*readonly*/) {
    return &g_served;
}

void vs_close(void* /*handle*/) {}

int64_t vs_get_size(void*) {
    return static_cast<int64_t>(g_served->disk().size());
}

int vs_can_write(void*) {
    return g_served->disk().writable() ? 1 : 0;
}

int vs_can_flush(void*) {
    return 1;
}

int vs_can_fua(void*) {
    return NBDKIT_FUA_EMULATE;
}

int vs_can_multi_conn(void*) {
    return 1;  // one process holds the one disk state: a flush covers every connection
}

int vs_can_extents(void*) {
    return 1;
}

int vs_is_rotational(void*) {
    return 0;
}

int vs_block_size(void*, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
    *minimum = 1;
    *preferred = g_served->chunk_size();
    *maximum = 0xffffffff;
    return 0;
}

const char* vs_export_description(void*) {
    const auto& p = g_served->point();
    std::string text =
        "vmshadow restore point " + p.id.hex() + " (" + p.vm + ") disk " + g_served->record().name;
    return nbdkit_strdup_intern(text.c_str());
}

int vs_pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t) {
    return check(g_served->disk().read(offset, {static_cast<std::uint8_t*>(buf), count}));
}

int vs_pwrite(void*, const void* buf, uint32_t count, uint64_t offset, uint32_t) {
    return check(g_served->disk().write(offset, {static_cast<const std::uint8_t*>(buf), count}));
}

int vs_flush(void*, uint32_t) {
    return check(g_served->disk().flush());
}

int vs_extents(void*, uint32_t count, uint64_t offset, uint32_t flags,
               struct nbdkit_extents* extents) {
    auto list = g_served->disk().extents(offset, count);
    if (!list) return report(list.error());
    for (const auto& e : *list) {
        uint32_t type = e.hole ? (NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) : 0;
        if (nbdkit_add_extent(extents, e.offset, e.length, type) == -1) return -1;
        if (flags & NBDKIT_FLAG_REQ_ONE) break;
    }
    return 0;
}

nbdkit_plugin make_plugin() {
    nbdkit_plugin p{};
    p.name = "vmshadow";
    p.longname = "vmshadow restore point export";
    p.version = "0.1.0";
    p.description = "Serves one disk of a vmshadow restore point (read-only, or with an overlay)";
    p.config = vs_config;
    p.config_complete = vs_config_complete;
    p.config_help =
        "repo=PATH|s3:URL      repository (default: $VMSHADOW_REPO; S3 options from\n"
        "                      VMSHADOW_S3_* and AWS_* in the environment)\n"
        "point=ID              restore point: full id, unique prefix or NAME@latest\n"
        "disk=NAME             disk of the point (needed when it has several)\n"
        "overlay=FILE          writable: writes go to FILE and FILE.map (default: read-only)\n"
        "password-file=FILE    password of an encrypted repository (or $VMSHADOW_PASSWORD)\n"
        "owner=TEXT            what the export is for, in its repository lock";
    p.magic_config_key = nullptr;
    p.get_ready = vs_get_ready;
    p.after_fork = vs_after_fork;
    p.cleanup = vs_cleanup;
    p.unload = vs_unload;
    p.open = vs_open;
    p.close = vs_close;
    p.get_size = vs_get_size;
    p.can_write = vs_can_write;
    p.can_flush = vs_can_flush;
    p.can_fua = vs_can_fua;
    p.can_multi_conn = vs_can_multi_conn;
    p.can_extents = vs_can_extents;
    p.is_rotational = vs_is_rotational;
    p.block_size = vs_block_size;
    p.export_description = vs_export_description;
    p.pread = vs_pread;
    p.pwrite = vs_pwrite;
    p.flush = vs_flush;
    p.extents = vs_extents;
    return p;
}

nbdkit_plugin plugin = make_plugin();

}  // namespace

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
NBDKIT_REGISTER_PLUGIN(plugin)
