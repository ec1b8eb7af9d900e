#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fails when a C++ file in git differs from what clang-format (.clang-format) makes of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mapfile -t files < <(git ls-files 'src/*.h' 'src/*.cpp' 'tests/*.h' 'tests/*.cpp')
if ! out=$(clang-format --dry-run --Werror "${files[@]}" 2>&1); then
  printf '%s\n' "$out" | grep -E '^[^ ].*(warning|error)' | head -20
  echo "format: run clang-format -i on the files above"
  exit 1
fi
echo "format: ${#files[@]} files clean"
