#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Repository benchmark: vmshadow vs restic vs borg on a 4 GiB qcow2 image of a real Debian
# system plus ~1 GiB of real files (build-image.sh). Medians of $RUNS runs of: full backup,
# incremental after changing 1% of the image in scattered 4 KiB writes, restore; peak memory
# via /usr/bin/time. Then the scale checks: an unchanged fully allocated multi-GiB image, a
# 1 TiB sparse image, a repository of many points. Prints a Markdown report on stdout.
#
# Bench-only dependencies (not in scripts/setup-host.sh): restic borgbackup time
# python3-libnbd debootstrap.   Usage: bench/repo/run.sh [path/to/vmshadow] > report.md
# The repository on S3 (issue 17): bench/repo/run.sh s3 [path/to/vmshadow] > report.md (s3.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# `run.sh s3 [vmshadow]`: the repository on S3 (Ceph RGW) vs local vs restic to RGW (s3.sh).
if [ "${1:-}" = s3 ]; then
  shift
  exec "$HERE/s3.sh" "$@"
fi
VMSHADOW=$(realpath "${1:-$HERE/../../build-repo/src/cli/vmshadow}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
RUNS=${RUNS:-3}
W=$BENCH_DIR/work
export DEBIAN_FRONTEND=noninteractive
for p in restic borgbackup time python3-libnbd debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    apt-get install -y -q "$p" >/dev/null
done
"$HERE/build-image.sh" >&2
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache
export BORG_PASSPHRASE= BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$W/borg-base
export VMSHADOW_PASSWORD=bench VMSHADOW_REPO=
rm -rf "$W" && mkdir -p "$W"
RES=$W/results.txt
: >"$RES"

# measure NAME CMD...: appends "NAME seconds max_rss_kib" and "NAME_cpu cpu_seconds 0" (user +
# system time of the command and the children it waited for, qemu-nbd included) to the results.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$W/time.txt" "$@" >"$W/last.out" 2>"$W/last.err" ||
    { echo "FAILED: $name: $*" >&2; cat "$W/last.err" >&2; exit 1; }
  read -r e m u s <"$W/time.txt"
  echo "$name $e $m" >>"$RES"
  echo "${name}_cpu $(/usr/bin/python3 -c "print($u + $s)") 0" >>"$RES"
}
size_of() { du -sb "$1" | cut -f1; }
record() { echo "$1 $2 0" >>"$RES"; }  # a size, in the seconds column

with_nbd() {  # with_nbd IMAGE FORMAT CMD... (CMD gets the NBD URI as its last argument)
  local img=$1 fmt=$2; shift 2
  local sock=$W/nbd.sock
  rm -f "$sock"
  qemu-nbd --format="$fmt" --socket="$sock" --cache=writeback "$img" &
  local pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  "$@" "nbd+unix:///?socket=$sock"
  kill "$pid" 2>/dev/null || true  # it exits by itself after its client leaves
  wait "$pid" 2>/dev/null || true
}

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  record "load_run$run" "$(cut -d' ' -f1 /proc/loadavg)"
  cp "$BENCH_DIR/debian.qcow2" "$W/img.qcow2"
  sync
  # --- full backups
  rm -rf "$W/v" "$W/ve" "$W/r" "$W/b1" "$W/b3" "$W/restic-cache" "$W/borg-base"
  "$VMSHADOW" repo init "$W/v" >/dev/null
  "$VMSHADOW" repo init "$W/ve" --encrypt >/dev/null
  restic init -q -r "$W/r" >/dev/null
  borg init -e none "$W/b1"
  borg init -e none "$W/b3"
  measure vmshadow_full "$VMSHADOW" --repo "$W/v" image backup "$W/img.qcow2" --name bench
  measure vmshadow_enc_full "$VMSHADOW" --repo "$W/ve" image backup "$W/img.qcow2" --name bench
  measure restic_full restic -q -r "$W/r" backup "$W/img.qcow2"
  measure borg_lz4_full borg create -C lz4 "$W/b1::full" "$W/img.qcow2"
  measure borg_zstd3_full borg create -C zstd,3 "$W/b3::full" "$W/img.qcow2"
  for t in v ve r b1 b3; do record "size_full_$t" "$(size_of "$W/$t")"; done
  # --- 1% scattered change, then incrementals
  with_nbd "$W/img.qcow2" qcow2 /usr/bin/python3 "$HERE/scatter-writes.py" 1 "$run" "$W/changed.txt" 2>>"$W/log"
  record changed_blocks "$(wc -l <"$W/changed.txt")"
  rm -rf "$W/cb"; "$VMSHADOW" repo init "$W/cb" >/dev/null
  with_nbd "$W/img.qcow2" qcow2 /usr/bin/python3 "$HERE/extract-blocks.py" "$W/changed.txt" "$W/changed.raw"
  "$VMSHADOW" --repo "$W/cb" image backup "$W/changed.raw" --name cb >/dev/null
  record changed_blocks_compressed "$(size_of "$W/cb/data")"
  for t in v ve r b1 b3; do eval "before_$t=$(size_of "$W/$t")"; done
  measure vmshadow_incr "$VMSHADOW" --repo "$W/v" image backup "$W/img.qcow2" --name bench
  measure vmshadow_enc_incr "$VMSHADOW" --repo "$W/ve" image backup "$W/img.qcow2" --name bench
  measure restic_incr restic -q -r "$W/r" backup "$W/img.qcow2"
  measure borg_lz4_incr borg create -C lz4 "$W/b1::incr" "$W/img.qcow2"
  measure borg_zstd3_incr borg create -C zstd,3 "$W/b3::incr" "$W/img.qcow2"
  for t in v ve r b1 b3; do
    eval "b=\$before_$t"; record "growth_incr_$t" $(( $(size_of "$W/$t") - b ))
  done
  # --- restores (the incremental point)
  rm -rf "$W/out"*; mkdir -p "$W/out-r" "$W/out-b"
  measure vmshadow_restore_qcow2 "$VMSHADOW" --repo "$W/v" image restore bench@latest "$W/out.qcow2" --format qcow2
  measure vmshadow_restore_raw "$VMSHADOW" --repo "$W/v" image restore bench@latest "$W/out.raw"
  qemu-img compare -q "$W/img.qcow2" "$W/out.qcow2"
  qemu-img compare -q "$W/img.qcow2" "$W/out.raw"
  rm -f "$W/out.qcow2" "$W/out.raw"
  measure restic_restore restic -q -r "$W/r" restore latest --target "$W/out-r"
  rm -rf "$W/out-r"
  measure borg_lz4_restore bash -c "cd '$W/out-b' && borg extract '$W/b1::incr'"
  rm -rf "$W/out-b"
done

# --- scale: unchanged fully allocated image, 1 TiB sparse image, many points
echo "scale checks" >&2
rm -rf "$W/s" && "$VMSHADOW" repo init "$W/s" >/dev/null
head -c 2G /dev/urandom >"$W/full.raw"
"$VMSHADOW" --repo "$W/s" image backup "$W/full.raw" --name full >/dev/null
measure unchanged_full_alloc "$VMSHADOW" --repo "$W/s" --json image backup "$W/full.raw" --name full
record unchanged_added "$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_added"])' <"$W/last.out")"
rm -f "$W/full.raw"
qemu-img create -q -f qcow2 "$W/tib.qcow2" 1T
qemu-io -f qcow2 -c "write -P 1 0 4M" -c "write -P 2 300G 4M" -c "write -P 3 700G 4M" \
  -c "write -P 4 1048572M 4M" "$W/tib.qcow2" >/dev/null
measure tib_sparse_full "$VMSHADOW" --repo "$W/s" image backup "$W/tib.qcow2" --name tib
measure tib_sparse_restore "$VMSHADOW" --repo "$W/s" image restore tib@latest "$W/tib.out" --format qcow2
qemu-img compare -q "$W/tib.qcow2" "$W/tib.out"
rm -f "$W/tib.out"
head -c 64M /dev/urandom >"$W/small.raw"
for i in $(seq 100); do
  printf 'x%.0s' $(seq 16) | dd of="$W/small.raw" bs=1 seek=$((i * 65536 * 3)) conv=notrunc status=none
  "$VMSHADOW" --repo "$W/s" image backup "$W/small.raw" --name many >/dev/null
done
measure many_points_backup "$VMSHADOW" --repo "$W/s" image backup "$W/small.raw" --name many
measure many_points_list "$VMSHADOW" --repo "$W/s" points --json
measure many_points_check "$VMSHADOW" --repo "$W/s" repo check
record many_points_count "$(/usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' <"$W/last.out" 2>/dev/null || echo 0)"
"$VMSHADOW" --repo "$W/s" points --json | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' >"$W/count"
record many_points_count2 "$(cat "$W/count")"

/usr/bin/python3 "$HERE/report.py" "$RES" "$(nproc)" "$VMSHADOW"
