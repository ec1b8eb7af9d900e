// SPDX-License-Identifier: MIT
#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

#include "common/os_error.h"

namespace vmshadow {
namespace fs = std::filesystem;

namespace {

fs::path directory_of(const fs::path& target) {
    return target.has_parent_path() ? target.parent_path() : fs::path(".");
}

}  // namespace

AtomicFile::AtomicFile(fs::path target, fs::path temp, UniqueFd fd)
    : target_(std::move(target)), temp_(std::move(temp)), fd_(std::move(fd)) {}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : target_(std::move(other.target_)),
      temp_(std::exchange(other.temp_, {})),
      fd_(std::move(other.fd_)) {}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
    if (this != &other) {
        discard();
        target_ = std::move(other.target_);
        temp_ = std::exchange(other.temp_, {});
        fd_ = std::move(other.fd_);
    }
    return *this;
}

AtomicFile::~AtomicFile() {
    discard();
}

void AtomicFile::discard() {
    fd_.reset();
    if (!temp_.empty()) ::unlink(temp_.c_str());
    temp_.clear();
}

Result<AtomicFile> AtomicFile::create(fs::path target, mode_t mode) {
    const fs::path dir = directory_of(target);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return fail(os_error("create directory " + dir.string(), ec));
    std::string temp = (dir / ("." + target.filename().string() + ".XXXXXX")).string();
    UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
    if (!fd) return fail(os_error("create a temp file in " + dir.string(), errno));
    AtomicFile file(std::move(target), temp, std::move(fd));
    if (::fchmod(file.fd_.get(), mode) != 0) return fail(os_error("chmod " + temp, errno));
    return file;
}

Status AtomicFile::write(std::string_view data) {
    if (temp_.empty())
        return fail(ErrorKind::internal, "write to " + target_.string() + " after commit");
    while (!data.empty()) {
        ssize_t n = ::write(fd_.get(), data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(os_error("write " + temp_.string(), errno));
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

Status AtomicFile::commit() {
    if (temp_.empty()) return fail(ErrorKind::internal, "commit of " + target_.string() + " twice");
    if (::fsync(fd_.get()) != 0) return fail(os_error("fsync " + temp_.string(), errno));
    if (::close(fd_.release()) != 0) return fail(os_error("close " + temp_.string(), errno));
    if (::rename(temp_.c_str(), target_.c_str()) != 0)
        return fail(os_error("rename " + temp_.string() + " to " + target_.string(), errno));
    temp_.clear();
    // The rename is only durable once the directory entry is: without this fsync a crash
    // could bring back the old record after we acted on the new one.
    const fs::path dir = directory_of(target_);
    UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd) return fail(os_error("open directory " + dir.string(), errno));
    if (::fsync(dir_fd.get()) != 0) return fail(os_error("fsync directory " + dir.string(), errno));
    return {};
}

Status write_file_atomically(const fs::path& path, std::string_view content, mode_t mode) {
    auto file = AtomicFile::create(path, mode);
    if (!file) return std::unexpected(file.error());
    if (auto st = file->write(content); !st) return st;
    return file->commit();
}

}  // namespace vmshadow
