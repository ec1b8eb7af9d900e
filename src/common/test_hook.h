// SPDX-License-Identifier: MIT
#pragma once
// test_kill_point: a test hook that kills this process at a named step, so tests can stop an
// operation at each of its steps in turn, deterministically (a restore --replace killed while
// it swaps files, say). Off unless VMSHADOW_TEST_KILL_AT names the step: then SIGKILL, as a
// `kill -9` from outside would. Users never set it; it is documented in docs/ARCHITECTURE.md.
//
// Thread-safety: reads the environment only.

#include <signal.h>

#include <cstdlib>
#include <string_view>

namespace vmshadow {

inline void test_kill_point(std::string_view step) {
    const char* at = std::getenv("VMSHADOW_TEST_KILL_AT");
    if (at && step == at) ::raise(SIGKILL);
}

}  // namespace vmshadow
