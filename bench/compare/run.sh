#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Old against new, side by side in one run: two vmshadow binaries take turns (the order
# alternating each round) on the vmshadow steps of bench/repo and bench/restore — a full
# `image backup` of bench/repo/build-image.sh's 4 GiB qcow2 into a fresh repository, then
# `image restore` of it to qcow2 and to sparse raw — so that a shared machine's load falls on
# both alike. Wall time and CPU (user + sys of the command and the children it waits for,
# qemu-nbd included) from /usr/bin/time; medians and new/old ratios on stdout (Markdown).
# No peers (restic, borg, virtnbdbackup): bench/repo/run.sh and bench/restore/run.sh have them.
#   Usage: bench/compare/run.sh OLD/vmshadow NEW/vmshadow > report.md
#   Environment: RUNS (5), BENCH_DIR (/var/tmp/vmshadow-bench).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OLD=$(realpath "${1:?usage: bench/compare/run.sh OLD/vmshadow NEW/vmshadow}")
NEW=$(realpath "${2:?usage: bench/compare/run.sh OLD/vmshadow NEW/vmshadow}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
RUNS=${RUNS:-5}
W=$BENCH_DIR/compare-run
export VMSHADOW_REPO=
"$HERE/../repo/build-image.sh" >&2
rm -rf "$W" && mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
RES=$W/results.txt
: >"$RES"
cp "$BENCH_DIR/debian.qcow2" "$W/img.qcow2"
cat "$W/img.qcow2" >/dev/null  # warm cache, as bench/repo does

# measure LABEL STEP CMD...: appends "LABEL STEP wall cpu" to the results.
measure() {
  local label=$1 step=$2; shift 2
  /usr/bin/time -f "%e %U %S" -o "$W/time.txt" "$@" >"$W/last.out" 2>"$W/last.err" ||
    { echo "FAILED: $label $step: $*" >&2; cat "$W/last.err" >&2; exit 1; }
  read -r e u s <"$W/time.txt"
  echo "$label $step $e $(/usr/bin/python3 -c "print(round($u + $s, 2))")" >>"$RES"
  sync
}

one() {  # one LABEL BINARY: the three steps of one binary
  local label=$1 bin=$2
  rm -rf "$W/repo" "$W/out.qcow2" "$W/out.raw"
  "$bin" repo init "$W/repo" >/dev/null
  sync
  measure "$label" full "$bin" --repo "$W/repo" image backup "$W/img.qcow2" --name bench
  measure "$label" restore_qcow2 "$bin" --repo "$W/repo" image restore bench@latest "$W/out.qcow2" --format qcow2
  rm -f "$W/out.qcow2"
  measure "$label" restore_raw "$bin" --repo "$W/repo" image restore bench@latest "$W/out.raw"
  rm -f "$W/out.raw"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq "$RUNS"); do
  echo "round $run/$RUNS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  echo "load round$run $(cut -d' ' -f1 /proc/loadavg) 0" >>"$RES"
  if [ $((run % 2)) -eq 1 ]; then one old "$OLD"; one new "$NEW"; else one new "$NEW"; one old "$OLD"; fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

/usr/bin/python3 - "$RES" "$OLD" "$NEW" "$RUNS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import statistics, sys, datetime, platform
res, old, new, runs, before, after = sys.argv[1:7]
rows = [l.split() for l in open(res)]
loads = [r[2] for r in rows if r[0] == "load"]
data = {}
for label, step, wall, cpu in (r for r in rows if r[0] != "load"):
    data.setdefault((label, step), []).append((float(wall), float(cpu)))
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
import os
print(f"Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores ({cpu_model}); "
      f"load average (1, 5, 15 min) before {before}, after {after}; 1-minute load at the start of each round: {', '.join(loads)}. "
      f"Old: `{old}`. New: `{new}`. Rounds: {runs}, the order alternating; medians (every round in brackets).\n")
print("| step | old wall | new wall | new / old wall | old CPU | new CPU | new / old CPU |")
print("|---|---|---|---|---|---|---|")
names = {"full": "full `image backup`", "restore_qcow2": "`image restore --format qcow2`", "restore_raw": "`image restore` (sparse raw)"}
for step in ("full", "restore_qcow2", "restore_raw"):
    o, n = data[("old", step)], data[("new", step)]
    ow, nw = statistics.median(w for w, _ in o), statistics.median(w for w, _ in n)
    oc, nc = statistics.median(c for _, c in o), statistics.median(c for _, c in n)
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
    print(f"| {names[step]} | {ow:.2f} s ({fmt(w for w, _ in o)}) | {nw:.2f} s ({fmt(w for w, _ in n)}) | {nw/ow:.3f} "
          f"| {oc:.2f} s ({fmt(c for _, c in o)}) | {nc:.2f} s ({fmt(c for _, c in n)}) | {nc/oc:.3f} |")
PY
