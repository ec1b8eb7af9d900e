// SPDX-License-Identifier: MIT
#include "vss/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "common/unique_fd.h"

namespace vmshadow::vss {
namespace {

Error os_error(std::string_view what, const std::filesystem::path& path, int err) {
    ErrorKind kind = err == EACCES || err == EPERM ? ErrorKind::permission : ErrorKind::io;
    return Error(kind, std::string(what) + " " + path.string() + ": " + std::strerror(err));
}

Status write_all(int fd, std::string_view content, const std::filesystem::path& path) {
    while (!content.empty()) {
        ssize_t n = ::write(fd, content.data(), content.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(os_error("write", path, errno));
        content.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

}  // namespace

Status write_file_atomically(const std::filesystem::path& path, std::string_view content) {
    const std::filesystem::path dir =
        path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return fail(os_error("create directory", dir, ec.value()));

    std::string temp = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
    UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
    if (!fd) return fail(os_error("create temp file in", dir, errno));
    bool committed = false;
    struct TempRemover {
        const std::string& name;
        const bool& committed;
        ~TempRemover() {
            if (!committed) ::unlink(name.c_str());
        }
    } remover{temp, committed};

    if (::fchmod(fd.get(), 0644) != 0) return fail(os_error("chmod", temp, errno));
    if (auto written = write_all(fd.get(), content, temp); !written) return written;
    if (::fsync(fd.get()) != 0) return fail(os_error("fsync", temp, errno));
    if (::close(fd.release()) != 0) return fail(os_error("close", temp, errno));
    if (::rename(temp.c_str(), path.c_str()) != 0) return fail(os_error("rename to", path, errno));
    committed = true;
    UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd) return fail(os_error("open directory", dir, errno));
    if (::fsync(dir_fd.get()) != 0) return fail(os_error("fsync directory", dir, errno));
    return {};
}

}  // namespace vmshadow::vss
