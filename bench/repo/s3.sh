#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Repository on S3 benchmark (issue 17): a full backup and a full restore of the 4 GiB bench
# image (build-image.sh) by vmshadow to Ceph's RADOS Gateway, by vmshadow to the local
# backend (a directory), and by restic 0.14 to the same gateway, side by side in one run
# (alternated when RUNS > 1). The gateway is the project's own lab cluster
# (tests/lab/ceph-rgw.sh), brought up here on free loopback ports and taken down at the end.
# Prints a Markdown report on stdout. Goals: vmshadow to RGW >= 0.8x its local speed and
# >= 2x restic's to the same RGW.
#
# Usage: bench/repo/run.sh s3 [path/to/vmshadow] > report.md      (or this script directly)
# Environment: RUNS (default 1), BENCH_DIR (default /var/tmp/vmshadow-bench), STORE (the OSD's
# store, default bluestore on a sparse file under $BENCH_DIR; memstore keeps the data in RAM),
# STORE_GB (default 16), SKIP (space-separated: local s3 restic — halves not to run).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=$HERE/../../tests/lab/ceph-rgw.sh
VMSHADOW=$(realpath "${1:-$HERE/../../build/src/cli/vmshadow}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
RUNS=${RUNS:-1}
SKIP=" ${SKIP:-} "
W=$BENCH_DIR/s3work
export CEPHLAB=${CEPHLAB:-$BENCH_DIR-ceph}
export STORE=${STORE:-bluestore} STORE_GB=${STORE_GB:-16} TLS=0
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache VMSHADOW_PASSWORD=bench VMSHADOW_REPO=
for p in restic time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    apt-get install -y -q "$p" >/dev/null
done
[ -x "$VMSHADOW" ] || { echo "s3 bench: no vmshadow binary at $VMSHADOW" >&2; exit 2; }
"$HERE/build-image.sh" >&2
IMG=$BENCH_DIR/debian.qcow2

rm -rf "$W" && mkdir -p "$W"
cleanup() {
  bash "$LAB" down >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
bash "$LAB" down >/dev/null
set -a
# shellcheck disable=SC1090
. "$(bash "$LAB" up | tail -n1)"
set +a
E=$VMSHADOW_TEST_S3_ENDPOINT
RES=$W/results.txt
: >"$RES"

# measure NAME CMD...: appends "NAME seconds max_rss_kib" and "NAME_cpu cpu_seconds 0" (user +
# system of the command and the children it waited for) to the results.
measure() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M %U %S" -o "$W/time.txt" "$@" >"$W/last.out" 2>"$W/last.err" ||
    { echo "FAILED: $name: $*" >&2; tail -n 30 "$W/last.err" >&2; exit 1; }
  read -r e m u s <"$W/time.txt"
  echo "$name $e $m" >>"$RES"
  echo "${name}_cpu $(/usr/bin/python3 -c "print($u + $s)") 0" >>"$RES"
  echo "  $name: ${e} s" >&2
}
record() { echo "$1 $2 0" >>"$RES"; }
# Bytes in a bucket (the gateway's own count, after the backup).
bucket_bytes() {
  radosgw-admin -c "$CEPHLAB/ceph.conf" bucket stats --bucket="$1" 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; u=json.load(sys.stdin)["usage"]; print(sum(v.get("size_actual", 0) for v in u.values()))'
}
# Requests the gateway has answered so far (radosgw logs one "beast:" line per request).
rgw_requests() { grep -c ' beast: ' "$CEPHLAB/log/client.rgw.log" || true; }
# CPU seconds (user + system) the cluster's daemons (mon, OSD, radosgw) have used so far: the
# gateway runs on the same cores as the client, so its work is part of every S3 run's time.
gateway_cpu() {
  local total=0 p f
  for p in $(pgrep -f -- "$CEPHLAB/ceph.conf"); do
    read -r -a f <"/proc/$p/stat" || continue
    total=$((total + f[13] + f[14]))
  done
  /usr/bin/python3 -c "print($total / $(getconf CLK_TCK))"
}
# measure_s3 NAME CMD...: measure, and record the requests it sent as NAME_requests and the
# gateway's CPU seconds meanwhile as NAME_gwcpu.
measure_s3() {
  local before cpu0; before=$(rgw_requests); cpu0=$(gateway_cpu)
  measure "$@"
  record "${1}_requests" $(( $(rgw_requests) - before ))
  record "${1}_gwcpu" "$(/usr/bin/python3 -c "print(round($(gateway_cpu) - $cpu0, 2))")"
}
skipped() { [[ $SKIP == *" $1 "* ]]; }

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  record "load_run$run" "$(cut -d' ' -f1 /proc/loadavg)"
  rm -rf "$W/local" "$W/out"* "$W/restic-cache"
  # Unique buckets per run: a deleted bucket's data is freed by RGW's GC only later.
  vb=vmshadow-bench-$run-$RANDOM rb=restic-bench-$run-$RANDOM
  if ! skipped local; then
    "$VMSHADOW" repo init "$W/local" >/dev/null
    measure local_backup "$VMSHADOW" --repo "$W/local" image backup "$IMG" --name bench
    record size_local "$(du -sb "$W/local" | cut -f1)"
    measure local_restore "$VMSHADOW" --repo "$W/local" image restore bench@latest "$W/out-local.qcow2" --format qcow2
    qemu-img compare -q "$IMG" "$W/out-local.qcow2"
    rm -rf "$W/out-local.qcow2" "$W/local"
  fi
  if ! skipped s3; then
    "$VMSHADOW" repo init "s3:$E/$vb" >/dev/null
    measure_s3 s3_backup "$VMSHADOW" --repo "s3:$E/$vb" image backup "$IMG" --name bench
    record size_s3 "$(bucket_bytes "$vb")"
    measure_s3 s3_restore "$VMSHADOW" --repo "s3:$E/$vb" image restore bench@latest "$W/out-s3.qcow2" --format qcow2
    qemu-img compare -q "$IMG" "$W/out-s3.qcow2"
    rm -f "$W/out-s3.qcow2"
  fi
  if ! skipped restic; then
    restic -q -r "s3:$E/$rb" init >/dev/null
    measure_s3 restic_backup restic -q -r "s3:$E/$rb" backup "$IMG"
    record size_restic "$(bucket_bytes "$rb")"
    measure_s3 restic_restore restic -q -r "s3:$E/$rb" restore latest --target "$W/out-restic"
    cmp "$IMG" "$W/out-restic$IMG"
    rm -rf "$W/out-restic"
  fi
done

/usr/bin/python3 "$HERE/report-s3.py" "$RES" "$(nproc)" "$VMSHADOW" "$STORE" "$STORE_GB"
