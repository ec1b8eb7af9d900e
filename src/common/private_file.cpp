// SPDX-License-Identifier: MIT
#include "common/private_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/os_error.h"

namespace vmshadow {

Status check_private_file(const std::filesystem::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) return fail(os_error(file.string(), errno));
    if (st.st_uid != ::geteuid()) {
        return fail(ErrorKind::permission,
                    file.string() + ": owned by uid " + std::to_string(st.st_uid) +
                        ", not by this user: chown it to uid " + std::to_string(::geteuid()));
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        return fail(
            ErrorKind::permission,
            file.string() + ": readable or writable by others; run chmod 600 " + file.string());
    }
    return {};
}

}  // namespace vmshadow
