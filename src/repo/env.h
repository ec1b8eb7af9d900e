// SPDX-License-Identifier: MIT
#pragma once
// Env: every filesystem operation the repository performs, behind one interface.
//
// This module is: the seam through which the repository touches the disk (leveldb's Env),
// the POSIX implementation, and the one atomic-write primitive (temp file, fsync, rename,
// fsync the directory). Tests substitute a fault-injecting Env that "crashes" at the Nth
// mutating operation, which is how crash safety is proven deterministically.
// This module is not: a general VFS; paths are plain strings, absolute or relative to the
// process's working directory.
//
// Guarantees of PosixEnv: `create` fails if the file exists (O_EXCL); `rename` is atomic
// and replaces the target; nothing is durable until `sync` (file) and `sync_dir` (its
// directory). Errors name the path and the errno text; a full disk is ErrorKind::io with
// "No space left on device" in the message.
//
// Thread-safety: Env methods may be called from any thread; a file object is used by one
// thread at a time, except RandomAccessFile::read_at, which is safe concurrently.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "repo/crypto.h"

namespace vmshadow::repo {

class WritableFile {
  public:
    virtual ~WritableFile() = default;
    virtual Status append(ByteView data) = 0;
    virtual Status sync() = 0;
    virtual Status close() = 0;
    virtual const std::string& path() const = 0;
};

class RandomAccessFile {
  public:
    virtual ~RandomAccessFile() = default;
    // Reads exactly out.size() bytes at offset; a short read is a corruption error
    // ("truncated"), since every caller knows how long the data it asks for must be.
    virtual Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) const = 0;
    virtual std::uint64_t size() const = 0;
};

// A file Env::list_tree found.
struct FileInfo {
    std::string name;  // relative to the folder listed, '/'-separated
    std::uint64_t size = 0;
    std::int64_t modified = 0;  // Unix seconds, as modified_time()
};

class Env {
  public:
    virtual ~Env() = default;
    virtual Result<std::unique_ptr<WritableFile>> create(const std::string& path) = 0;
    virtual Result<std::unique_ptr<RandomAccessFile>> open(const std::string& path) = 0;
    // The same for a file whose size the caller already knows (a pack the index names):
    // an object store then skips the HEAD request open() sends to learn it. size() of what
    // it returns may be `size` as given.
    virtual Result<std::unique_ptr<RandomAccessFile>> open_sized(const std::string& path,
                                                                 std::uint64_t /*size*/) {
        return open(path);
    }
    virtual Status rename(const std::string& from, const std::string& to) = 0;
    virtual Status remove(const std::string& path) = 0;
    virtual Status make_dir(const std::string& path) = 0;  // ok if it exists
    virtual Status sync_dir(const std::string& path) = 0;
    // Names in a directory (no "." / ".."); a missing directory is not_found.
    virtual Result<std::vector<std::string>> list(const std::string& dir) = 0;
    virtual bool exists(const std::string& path) = 0;
    // When the file's content was last written, Unix seconds (gc's grace period). Not
    // pure: every Env sees the same files, and test Envs need not intercept it.
    virtual Result<std::int64_t> modified_time(const std::string& path);
    // Every file under `dir` at any depth, sorted by name, with its size and modification
    // time: a walk of the tree on a local disk; on object storage one listing of the prefix
    // (a request per 1000 keys) instead of one per folder and a request per file's time. A
    // missing `dir` is not_found here (an object store has no folders: it lists empty).
    // Not pure, like modified_time.
    virtual Result<std::vector<FileInfo>> list_tree(const std::string& dir);
    // How many files it pays to finish (store durably) at once: a local disk gains nothing
    // from more than one (its fsyncs queue anyway), an object store one per connection (each
    // upload waits on the network, not the disk). Backup sessions run that many finishers.
    virtual unsigned write_concurrency() const { return 1; }
    // How many reads it pays to keep in flight whatever the CPU count: 1 for a local disk
    // (the page cache and read-ahead hide its latency), an object store one per connection
    // (each ranged GET waits a round trip). Restores run at least that many readers.
    virtual unsigned read_concurrency() const { return 1; }

    static Env& posix();
};

// Reads a whole file.
Result<Bytes> read_file(Env& env, const std::string& path);

// Writes `data` to `dir/name` atomically and durably: `tmp_dir/<unique>` is written,
// fsynced, renamed over `dir/name`, and `dir` is fsynced. A crash leaves either the old file
// (or none) or the new one, never a mix; an abandoned temp file is removed by cleanup.
Status write_file_atomic(Env& env, const std::string& tmp_dir, const std::string& dir,
                         const std::string& name, ByteView data);

// A process-unique temp file name ("<prefix>-<pid>-<counter>").
std::string unique_temp_name(const std::string& prefix);

}  // namespace vmshadow::repo
