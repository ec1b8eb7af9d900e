#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quickstart 2: sets up this host, builds vmshadow and its tests, builds the lab guest
# (cached outside the clone) and runs the whole suite: unit tests in parallel, integration
# tests on real TCG guests one at a time. Extra arguments go to ctest (e.g. -R lab).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SUITE_START=$(date +%s)
suite_time() {
    local rc=$? s=$(($(date +%s) - SUITE_START))
    printf 'test.sh: whole suite (setup, build, guest, tests) took %dm%02ds, exit %d\n' $((s / 60)) $((s % 60)) "$rc"
}
trap suite_time EXIT

bash scripts/setup-host.sh
bash scripts/build.sh
VMSHADOW_LAB_DIR=$(bash tests/lab/build-guest.sh | tail -n1)
export VMSHADOW_LAB_DIR
bash tests/lab/lab-network.sh ensure >/dev/null
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
cd build
ctest --output-on-failure -j2 --timeout 900 "$@"
