// SPDX-License-Identifier: MIT
#pragma once
// FaultEnv: an Env that "kills the process" at its Nth mutating operation (leveldb's
// fault-injection idea). From that operation on, every write, fsync, rename, unlink, mkdir
// and create fails, as if the process had died there; a write that crashes lands half its
// bytes first (a torn write). Reads keep working so the dying code can unwind. The log of
// operations names each one ("rename tmp/… -> commits/…") so failures are easy to place.

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "repo/env.h"

namespace vmshadow::repo::test {

class FaultEnv final : public Env {
  public:
    explicit FaultEnv(std::uint64_t crash_at = 0) : crash_at_(crash_at) {}

    // Full-disk mode: from the Nth operation on, writes fail with ENOSPC's message while
    // everything else (removing files, renames) keeps working, as on a real full disk.
    void fill_disk_at(std::uint64_t n) { full_at_ = n; }
    bool disk_full() {
        std::lock_guard lock(mu_);
        return full_at_ != 0 && count_ >= full_at_;
    }

    std::uint64_t operations() const { return count_; }
    bool crashed() const { return crashed_; }
    const std::vector<std::string>& log() const { return log_; }

    // Returns the error for a crashed operation, or nothing if it may proceed.
    std::optional<Error> step(const std::string& what) {
        std::lock_guard lock(mu_);
        if (crashed_) return Error(ErrorKind::io, "process is dead (" + what + ")");
        ++count_;
        log_.push_back(what);
        if (crash_at_ != 0 && count_ == crash_at_) {
            crashed_ = true;
            return Error(ErrorKind::io,
                         "injected crash at operation " + std::to_string(count_) + ": " + what);
        }
        return std::nullopt;
    }

    Result<std::unique_ptr<WritableFile>> create(const std::string& path) override {
        if (auto e = step("create " + path)) return std::unexpected(*e);
        auto f = Env::posix().create(path);
        if (!f) return f;
        return std::make_unique<File>(*this, std::move(*f));
    }
    Result<std::unique_ptr<RandomAccessFile>> open(const std::string& path) override {
        return Env::posix().open(path);
    }
    Status rename(const std::string& from, const std::string& to) override {
        if (auto e = step("rename " + from + " -> " + to)) return std::unexpected(*e);
        return Env::posix().rename(from, to);
    }
    Status remove(const std::string& path) override {
        if (auto e = step("unlink " + path)) return std::unexpected(*e);
        return Env::posix().remove(path);
    }
    Status make_dir(const std::string& path) override {
        if (auto e = step("mkdir " + path)) return std::unexpected(*e);
        return Env::posix().make_dir(path);
    }
    Status sync_dir(const std::string& path) override {
        if (auto e = step("fsync dir " + path)) return std::unexpected(*e);
        return Env::posix().sync_dir(path);
    }
    Result<std::vector<std::string>> list(const std::string& dir) override {
        return Env::posix().list(dir);
    }
    bool exists(const std::string& path) override { return Env::posix().exists(path); }

  private:
    class File final : public WritableFile {
      public:
        File(FaultEnv& env, std::unique_ptr<WritableFile> f) : env_(env), f_(std::move(f)) {}
        Status append(ByteView data) override {
            if (env_.disk_full())
                return fail(ErrorKind::io, "writing " + f_->path() + ": No space left on device");
            if (auto e = env_.step("write " + f_->path())) {
                if (env_.crashed() && e->message().starts_with("injected"))
                    (void)f_->append(data.first(data.size() / 2));  // a torn write
                return std::unexpected(*e);
            }
            return f_->append(data);
        }
        Status sync() override {
            if (auto e = env_.step("fsync " + f_->path())) return std::unexpected(*e);
            return f_->sync();
        }
        Status close() override { return f_->close(); }
        const std::string& path() const override { return f_->path(); }

      private:
        FaultEnv& env_;
        std::unique_ptr<WritableFile> f_;
    };

    std::mutex mu_;
    std::uint64_t crash_at_;
    std::uint64_t full_at_ = 0;
    std::uint64_t count_ = 0;
    bool crashed_ = false;
    std::vector<std::string> log_;
};

}  // namespace vmshadow::repo::test
