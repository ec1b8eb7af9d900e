// SPDX-License-Identifier: MIT
#include "common/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/unique_fd.h"

namespace vmshadow {
namespace {

Error io_error(const char* what, const std::string& path) {
    std::string message(what);
    message.append(path).append(": ").append(std::strerror(errno));
    return Error(ErrorKind::io, std::move(message));
}

}  // namespace

Status write_file_durably(const std::string& path, std::string_view content) {
    const std::string tmp = path + ".tmp";
    {
        UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!fd) return std::unexpected(io_error("cannot create ", tmp));
        for (std::size_t done = 0; done < content.size();) {
            ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return std::unexpected(io_error("cannot write ", tmp));
            done += static_cast<std::size_t>(n);
        }
        if (::fsync(fd.get()) != 0) return std::unexpected(io_error("cannot sync ", tmp));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0)
        return std::unexpected(io_error("cannot replace ", path));
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    const std::string dir = parent.empty() ? std::string(1, '.') : parent.string();
    UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d || ::fsync(d.get()) != 0) return std::unexpected(io_error("cannot sync ", dir));
    return {};
}

}  // namespace vmshadow
