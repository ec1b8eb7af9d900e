// SPDX-License-Identifier: MIT
#pragma once
// Helpers for the repository tests: a temp directory, deterministic data, writing a byte
// vector as a disk and reading it back.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "repo/backup_session.h"
#include "repo/repository.h"
#include "repo/restore.h"

// The suite runs twice (tests/CMakeLists.txt): the second time every repository opened with
// the default Env lives on the object Env over the local blob store. Tests of the local
// directory's own mechanics (its tmp/ folder, crashes of the POSIX Env) skip that run.
#define VMSHADOW_SKIP_ON_BLOBS(why)                                                 \
    do {                                                                            \
        if (const char* on = std::getenv("VMSHADOW_TEST_REPO_ON_BLOBS"); on && *on) \
            GTEST_SKIP() << why;                                                    \
    } while (0)

namespace vmshadow::repo::test {

class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/vmshadow-repo-test-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }
    std::string sub(const std::string& name) const { return path_ + "/" + name; }

  private:
    std::string path_;
};

inline Bytes random_data(std::size_t n, std::uint32_t seed) {
    std::mt19937 gen(seed);
    Bytes out(n);
    for (auto& b : out) b = static_cast<std::uint8_t>(gen() & 0xff);
    return out;
}

// Compressible data: text-like repetition with some randomness.
inline Bytes text_data(std::size_t n, std::uint32_t seed) {
    std::mt19937 gen(seed);
    const char* words[] = {"alpha ", "beta ", "gamma ", "delta ", "vmshadow ", "chunk ", "\n"};
    Bytes out;
    while (out.size() < n) {
        const char* w = words[gen() % 7];
        out.insert(out.end(), w, w + std::strlen(w));
    }
    out.resize(n);
    return out;
}

class MemorySink final : public DiskSink {
  public:
    explicit MemorySink(std::uint64_t size) : data(size) {}
    Status write(std::uint64_t offset, ByteView d) override {
        std::lock_guard lock(mu);
        std::memcpy(data.data() + offset, d.data(), d.size());
        return {};
    }
    std::mutex mu;
    Bytes data;
};

inline Result<std::unique_ptr<Repository>> open_plain(const std::string& path, Env* env = nullptr,
                                                      std::uint64_t pack_size = 0) {
    OpenOptions o;
    o.env = env;
    o.pack_size = pack_size;
    o.password = [] { return Result<std::string>("secret"); };
    return Repository::open(path, o);
}

// A new repository of 4 KiB chunks at `path`, opened as open_plain does.
inline Result<std::unique_ptr<Repository>> init_small(const std::string& path, Env* env = nullptr,
                                                      std::uint64_t pack_size = 0) {
    InitOptions init;
    init.chunk_size = 4096;
    if (auto st = Repository::init(path, init); !st) return std::unexpected(st.error());
    return open_plain(path, env, pack_size);
}

// Backs up `disks` (name → content) as one point of `vm`; the previous point is the base.
inline Result<RestorePoint> backup_bytes(Repository& repo, const std::string& vm,
                                         const std::vector<std::pair<std::string, Bytes>>& disks,
                                         unsigned workers = 0, std::uint64_t piece_chunks = 3) {
    auto listing = repo.list_points();
    if (!listing) return std::unexpected(listing.error());
    const RestorePoint* base = nullptr;
    for (const auto& p : listing->points)
        if (p.vm == vm) base = &p;
    SessionOptions so;
    so.workers = workers;
    auto session = BackupSession::begin(repo, so);
    if (!session) return std::unexpected(session.error());
    PointBuilder& point = (*session)->add_point(vm, "crash");
    for (const auto& [name, data] : disks) {
        auto disk = point.add_disk(name, data.size(), base);
        if (!disk) return std::unexpected(disk.error());
        std::uint64_t cs = (*disk)->chunk_size();
        // Feed in pieces of 3 chunks (or `piece_chunks`), skipping all-zero pieces (they
        // become holes).
        for (std::uint64_t off = 0; off < data.size(); off += piece_chunks * cs) {
            std::uint64_t n = std::min<std::uint64_t>(piece_chunks * cs, data.size() - off);
            Bytes piece(data.begin() + off, data.begin() + off + n);
            if (std::all_of(piece.begin(), piece.end(), [](auto b) { return b == 0; })) continue;
            if (auto st = (*disk)->write(off, std::move(piece)); !st)
                return std::unexpected(st.error());
        }
        if (auto st = (*disk)->finish(); !st) return std::unexpected(st.error());
    }
    auto committed = (*session)->commit();
    if (!committed) return std::unexpected(committed.error());
    return committed->front();
}

inline Result<Bytes> read_disk(const Repository& repo, const RestorePoint& p,
                               const std::string& disk, unsigned workers = 0) {
    const DiskRecord* d = p.disk(disk);
    if (!d) return fail(ErrorKind::not_found, "no disk " + disk);
    MemorySink sink(d->size);
    ReadOptions ro;
    ro.workers = workers;
    if (auto st = restore_object(repo, d->map, d->size, sink, ro); !st)
        return std::unexpected(st.error());
    return std::move(sink.data);
}

inline std::uint64_t dir_bytes(const std::string& path) {
    std::uint64_t total = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(path))
        if (e.is_regular_file()) total += e.file_size();
    return total;
}

}  // namespace vmshadow::repo::test
