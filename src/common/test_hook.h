// SPDX-License-Identifier: MIT
#pragma once
// Test hooks that stop an operation at a named step, so tests can act at each of its steps in
// turn, deterministically. Users never set them; they are documented in docs/ARCHITECTURE.md.
// - test_kill_point: off unless VMSHADOW_TEST_KILL_AT names the step: then SIGKILL, as a
//   `kill -9` from outside would (a restore --replace killed while it swaps files, say).
// - test_pause_point: off unless VMSHADOW_TEST_PAUSE_AT names the step: then one line
//   "vmshadow-test: paused at STEP" on stderr and a sleep of VMSHADOW_TEST_PAUSE_MS (default
//   3000) milliseconds, so that a signal the test sends on that line (SIGINT: a cancel) lands
//   while the operation is in that step. The sleep is not cut short: the operation then meets
//   the cancel where it really checks for one.
//
// Thread-safety: reads the environment only.

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

namespace vmshadow {

inline void test_kill_point(std::string_view step) {
    const char* at = std::getenv("VMSHADOW_TEST_KILL_AT");
    if (at && step == at) ::raise(SIGKILL);
}

inline void test_pause_point(std::string_view step) {
    const char* at = std::getenv("VMSHADOW_TEST_PAUSE_AT");
    if (!at || step != at) return;
    const char* ms = std::getenv("VMSHADOW_TEST_PAUSE_MS");
    long pause = ms ? std::strtol(ms, nullptr, 10) : 3000;
    std::string line = "vmshadow-test: paused at " + std::string(step) + "\n";
    (void)!::write(STDERR_FILENO, line.data(), line.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(pause));
}

}  // namespace vmshadow
