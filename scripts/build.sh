#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures and builds vmshadow into ./build (warnings are errors), and the web dashboard
# into web/dist (npm ci + npm run build, only when web/'s lockfile or sources are newer than
# the build). Used by demo.sh and test.sh; run it alone after changing code.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cmake -S . -B build -DVMSHADOW_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)" >/dev/null || cmake --build build -j1

bash scripts/build-web.sh
