#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the web dashboard vmshadowd serves at / (it looks for build/../web/dist) into
# web/dist: `npm ci` (the packages of web/package-lock.json, only when the lockfile is newer
# than what is installed) then `npm run build`, only when web/'s lockfile, build script or
# sources are newer than the build or it is missing. Nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../web"
if [ -f dist/index.html ] && [ -z "$(find package-lock.json build.mjs src -newer dist/index.html -print -quit)" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "build-web: npm is missing (scripts/setup-host.sh installs it)" >&2; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
npm run --silent build >&2
