// SPDX-License-Identifier: MIT
// The shared helpers of virt's backup job (backup_job_detail.h).
#include "virt/backup_job_detail.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "common/os_error.h"
#include "virt/libvirt_error.h"

namespace vmshadow::virt {
namespace fs = std::filesystem;

std::string random_token() {
    std::random_device rd;
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(rd()));
    return buf;
}

// Opens (creating) dir/lock and takes its exclusive flock without waiting. nullopt (with
// errno EWOULDBLOCK) when another process holds it.
Result<std::optional<UniqueFd>> try_lock(const fs::path& dir) {
    UniqueFd fd(::open((dir / kLockName).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return fail(os_error("open " + (dir / kLockName).string(), errno));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) return std::optional<UniqueFd>();
        return fail(os_error("lock " + (dir / kLockName).string(), errno));
    }
    return std::optional<UniqueFd>(std::move(fd));
}

Result<JobStats> job_stats(virDomainPtr dom, unsigned flags, const std::string& what) {
    int type = 0;
    virTypedParameterPtr params = nullptr;
    int n = 0;
    if (virDomainGetJobStats(dom, &type, &params, &n, flags) < 0) {
        return fail(libvirt_error(what + ": job statistics"));
    }
    JobStats stats;
    stats.type = type;
    unsigned long long ull = 0;
    if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DISK_TEMP_USED, &ull) == 1) {
        stats.temp_used = ull;
    }
    if (virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DISK_TEMP_TOTAL, &ull) == 1) {
        stats.temp_total = ull;
    }
    int op = 0;
    if (virTypedParamsGetInt(params, n, VIR_DOMAIN_JOB_OPERATION, &op) == 1) stats.operation = op;
    const char* err = nullptr;
    if (virTypedParamsGetString(params, n, VIR_DOMAIN_JOB_ERRMSG, &err) == 1 && err) {
        stats.errmsg = err;
    }
    virTypedParamsFree(params, n);
    return stats;
}

// virDomainAbortJob returns before libvirt has torn the job down: wait for the completed
// job's statistics (bounded), which say how it ended.
Result<JobStats> wait_job_end(virDomainPtr dom, const std::string& what) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (true) {
        auto current = job_stats(dom, 0, what);
        if (!current) return fail(current.error());
        if (current->type == VIR_DOMAIN_JOB_NONE) {
            auto done = job_stats(dom, VIR_DOMAIN_JOB_STATS_COMPLETED, what);
            if (!done || done->type != VIR_DOMAIN_JOB_NONE) return done;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            return fail(ErrorKind::timeout, what + ": the job did not end within 60 s of abort");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

bool backup_running(const JobStats& s) {
    return s.type != VIR_DOMAIN_JOB_NONE && s.operation == VIR_DOMAIN_JOB_OPERATION_BACKUP;
}

bool path_under(const fs::path& path, const fs::path& dir) {
    auto p = path.lexically_normal().string();
    auto d = dir.lexically_normal().string();
    if (!d.empty() && d.back() != '/') d += '/';
    return p.starts_with(d);
}

// A Domain holding its own reference to `dom`.
Domain borrow(virDomainPtr dom) {
    virDomainRef(dom);
    return Domain(DomainHandle(dom));
}

void remove_quietly(const fs::path& path, std::vector<fs::path>* removed) {
    std::error_code ec;
    if (fs::remove_all(path, ec) > 0 && removed) removed->push_back(path);
}

}  // namespace vmshadow::virt
