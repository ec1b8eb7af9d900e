// SPDX-License-Identifier: MIT
#pragma once
// For tests that need thread creation to fail: caps this process's address space at what it
// maps now plus `headroom` bytes, so a new thread's stack can't be mapped. Meant for a
// forked child (the cap can't be raised again). Root ignores RLIMIT_NPROC, not RLIMIT_AS.

#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>

namespace vmshadow::test {

inline bool limit_address_space(std::uint64_t headroom) {
    std::ifstream statm("/proc/self/statm");
    std::uint64_t pages = 0;
    statm >> pages;
    std::uint64_t now = pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    rlimit limit{now + headroom, now + headroom};
    return ::setrlimit(RLIMIT_AS, &limit) == 0;
}

}  // namespace vmshadow::test
