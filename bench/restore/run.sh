#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Restore benchmark (issue 5): every tool restores the same data, side by side in one run —
# the 4 GiB qcow2 of bench/repo/build-image.sh (Debian 12 minbase plus ~1.2 GB of real files):
#   vmshadow `image restore` to qcow2 (through qemu-nbd) and to sparse raw, every chunk verified;
#   virtnbdrestore (Debian's virtnbdbackup 1.9) of a full virtnbdbackup backup, uncompressed and
#     --compress (lz4), of a shut-off lab guest that has the image as its data disk vdb
#     (virtnbdbackup backs up a shut-off domain through its own qemu-nbd);
#   borg 1.2 extract (lz4) and restic 0.14 restore of a backup of the image file;
#   `qemu-img convert -O qcow2` of the source image (no repository: the floor of writing it).
# $RUNS rounds, the order of the tools rotating each round; wall time, CPU (user + sys of the
# command and the children it waits for) and peak RSS via /usr/bin/time. After each command
# a `sync` is timed too: vmshadow and virtnbdrestore make their output durable (fsync / NBD
# flush) before they end, restic, borg and `qemu-img convert` (cache=unsafe) leave it dirty in
# the page cache, so "until durable" (command + sync) is the like-for-like column. Outputs are
# compared with the source (`qemu-img compare`, cmp) once, untimed. Caches are warm (every
# repository and the image are read once first).
# Then instant recovery: a plain lab guest (TCG, agent on) is backed up with `vmshadow backup`
# and `vmshadow restore POINT --instant --as NAME --to DIR` runs in the background; the time
# from starting the command until `virsh qemu-agent-command NAME guest-ping` first succeeds is
# the figure (the command itself goes on until its disks are copied and pivoted; its total is
# reported too).
#
# Bench-only dependencies (not in scripts/setup-host.sh), installed if missing: virtnbdbackup
# restic borgbackup time (debootstrap through build-image.sh). Everything it creates (domains,
# their directories, repositories, outputs, sockets, libvirt's QEMU logs) is removed at exit,
# also on failure or Ctrl-C; leftovers of killed runs are reaped at the start.
#   Usage: bench/restore/run.sh path/to/vmshadow > report.md
#   Environment: RUNS (3), BENCH_DIR (/var/tmp/vmshadow-bench), LIBVIRT_DEFAULT_URI
#   (qemu:///system), VMSHADOW_LAB_DIR, INSTANT (1; 0 skips instant recovery), RESULTS_MD
#   (bench/RESULTS.md: the report replaces the part between its bench/restore markers; empty:
#   stdout only).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VMSHADOW=$(realpath "${1:?usage: bench/restore/run.sh path/to/vmshadow > report.md}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
RUNS=${RUNS:-3}
INSTANT=${INSTANT:-1}
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
export DEBIAN_FRONTEND=noninteractive
PY=/usr/bin/python3
RUN_ROOT=$BENCH_DIR/restore-run
NAME_PREFIX=vmshadow-bench-rst
log() { printf 'bench/restore: %s\n' "$*" >&2; }

[ -x "$VMSHADOW" ] || { log "$VMSHADOW is not executable"; exit 2; }
bash "$ROOT/scripts/setup-host.sh"  # packages of the lab, libvirtd running
for p in virtnbdbackup restic borgbackup time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    apt-get install -y -q "$p" >/dev/null
done

# --- the image: bench/repo/build-image.sh's, keyed by that recipe (as bench/live/run.sh does)
KEY=$(sha256sum "$ROOT/bench/repo/build-image.sh" | cut -c1-16)
IMAGE=$BENCH_DIR/debian.qcow2
if [ -f "$IMAGE" ] && [ "$(cat "$IMAGE.recipe" 2>/dev/null || echo "$KEY")" = "$KEY" ]; then
  [ -f "$IMAGE.recipe" ] || echo "$KEY" >"$IMAGE.recipe"
else
  [ -f "$IMAGE" ] && IMAGE=$BENCH_DIR/image-$KEY/debian.qcow2
  BENCH_DIR=$(dirname "$IMAGE") "$ROOT/bench/repo/build-image.sh" >&2
  echo "$KEY" >"$IMAGE.recipe"
fi
[ "$(qemu-img info --output=json "$IMAGE" | $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = 4294967296 ] ||
  { log "$IMAGE is not 4 GiB"; exit 1; }

remove_guest() {  # domain, its checkpoint/snapshot metadata, vmshadow run dirs, QEMU log
  local vm=$1 uuid
  uuid=$(virsh domuuid "$vm" 2>/dev/null || true)
  virsh destroy "$vm" >/dev/null 2>&1 || true
  virsh undefine "$vm" --checkpoints-metadata --snapshots-metadata --nvram >/dev/null 2>&1 || true
  [ -n "$uuid" ] && rm -rf /run/vmshadow/backup/"$uuid".* 2>/dev/null || true
  rm -f "/var/log/libvirt/qemu/$vm.log"
}
reap_stale() {  # guests and directories of runs killed before their trap ran
  local d pid
  for d in $(virsh list --all --name | grep "^$NAME_PREFIX-" || true); do
    pid=${d#"$NAME_PREFIX-"}; pid=${pid%%-*}
    [ -d "/proc/$pid" ] && continue
    log "removing stale guest $d"
    remove_guest "$d"
  done
  for d in "$RUN_ROOT"/"$NAME_PREFIX"-*; do
    [ -e "$d" ] || continue
    pid=${d##*/"$NAME_PREFIX"-}; pid=${pid%%-*}
    [ -d "/proc/$pid" ] || rm -rf "$d"
  done
}

NAME=$NAME_PREFIX-$$-$RANDOM
W=$RUN_ROOT/$NAME
IR_PID=
cleanup() {
  local rc=$? vm
  if [ -n "$IR_PID" ]; then  # /usr/bin/time and the vmshadow it runs
    pkill -TERM -P "$IR_PID" 2>/dev/null || true
    wait "$IR_PID" 2>/dev/null || true
  fi
  for vm in $(virsh list --all --name | grep "^$NAME-" || true) "$NAME"; do remove_guest "$vm"; done
  if [ "$rc" != 0 ] && [ -s "$W/results.txt" ]; then
    log "results so far:"; cat "$W/results.txt" >&2
  fi
  rm -rf "$W"
  rmdir "$RUN_ROOT" 2>/dev/null || true
  [ "$rc" = 0 ] || log "failed (exit $rc); guests $NAME* and $W removed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
reap_stale
mkdir -p "$W"
RES=$W/results.txt
: >"$RES"
LAB=${VMSHADOW_LAB_DIR:-$(bash "$ROOT/tests/lab/build-guest.sh" | tail -n1)}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# measure NAME CMD...: "NAME wall max_rss_kib", "NAME_cpu cpu 0" and "NAME_sync s 0" (a sync
# right after the command: what it left dirty) are appended to the results.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$W/time.txt" "$@" >"$W/last.out" 2>"$W/last.err" ||
    { log "FAILED: $name: $*"; tail -n 20 "$W/last.err" >&2; cat "$W/last.out" >&2; exit 1; }
  local t; read -r -a t < <(tail -n1 "$W/time.txt")
  local s0 s1; s0=$(date +%s.%N); sync; s1=$(date +%s.%N)
  echo "$name ${t[0]} ${t[1]}" >>"$RES"
  echo "${name}_cpu $(awk "BEGIN { print ${t[2]} + ${t[3]} }") 0" >>"$RES"
  echo "${name}_sync $(awk "BEGIN { print $s1 - $s0 }") 0" >>"$RES"
}
record() { echo "$1 $2 0" >>"$RES"; }
quietly() { "$@" >"$W/last.out" 2>"$W/last.err" || { log "FAILED: $*"; tail -n 20 "$W/last.err" >&2; exit 1; }; }

# --- backups of the same image (untimed)
log "backing up $IMAGE with every tool"
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache
export BORG_PASSPHRASE= BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$W/borg-base
export VMSHADOW_REPO=
unset VMSHADOW_PASSWORD
VMS=("$VMSHADOW" --repo "$W/vms")
quietly "${VMS[@]}" repo init "$W/vms"
quietly "${VMS[@]}" image backup "$IMAGE" --name bench
quietly restic init -q -r "$W/restic"
quietly restic -q -r "$W/restic" backup "$IMAGE"
quietly borg init -e none "$W/borg"
quietly borg create -C lz4 "$W/borg::full" "$IMAGE"
# virtnbdbackup: a shut-off lab guest with the image as vdb (offline backup through qemu-nbd)
bash "$ROOT/tests/lab/new-guest.sh" --name "$NAME" --dir "$W/guest" --lab "$LAB" \
  --data-disk blank:4G --define >/dev/null
cp --sparse=always "$IMAGE" "$W/guest/data-vdb.qcow2"
VNB=(virtnbdbackup -d "$NAME" -n -f "$W/vnb.sock" -l full)
quietly "${VNB[@]}" -o "$W/vnb-u"
quietly "${VNB[@]}" --compress -o "$W/vnb-c"
remove_guest "$NAME"
rm -rf "$W/guest"
VNB_VERSION=$(virtnbdbackup -V 2>&1 | tail -n1)
record source_bytes "$(qemu-img info --output=json "$IMAGE" | $PY -c 'import json,sys; print(json.load(sys.stdin)["actual-size"])')"
record data_bytes "$(qemu-img map --output=json "$IMAGE" | $PY -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')"
for d in vms restic borg vnb-u vnb-c; do record "size_$d" "$(du -sb "$W/$d" | cut -f1)"; done
# warm the caches: every repository and the image once
cat "$IMAGE" >/dev/null
find "$W/vms" "$W/restic" "$W/borg" "$W/vnb-u" "$W/vnb-c" -type f -exec cat {} + >/dev/null

# --- the disk's limit: 1 GiB written and fdatasync'ed (what "until durable" can't beat)
disk_rate() {
  local s0 s1; sync; s0=$(date +%s.%N)
  dd if=/dev/zero of="$W/dd.bin" bs=4M count=256 conv=fdatasync status=none; s1=$(date +%s.%N)
  rm -f "$W/dd.bin"
  record "$1" "$(awk "BEGIN { print 1073741824 / ($s1 - $s0) }")"
}
disk_rate disk_rate_before

# --- the restores
OUT=$W/out
restore_of() {  # restore_of TOOL: one measured restore into $OUT, then $OUT removed
  rm -rf "$OUT" && mkdir -p "$OUT" && sync
  case "$1" in
    vms_qcow2) measure "$1" "${VMS[@]}" image restore bench@latest "$OUT/disk.qcow2" --format qcow2 ;;
    vms_raw) measure "$1" "${VMS[@]}" image restore bench@latest "$OUT/disk.raw" ;;
    vnb_u) measure "$1" virtnbdrestore -n -i "$W/vnb-u" -o "$OUT" -d vdb -f "$W/vnbr.sock" -L "$W/vnbr.log" ;;
    vnb_c) measure "$1" virtnbdrestore -n -i "$W/vnb-c" -o "$OUT" -d vdb -f "$W/vnbr.sock" -L "$W/vnbr.log" ;;
    borg) measure "$1" bash -c "cd '$OUT' && exec borg extract '$W/borg::full'" ;;
    restic) measure "$1" restic -q -r "$W/restic" restore latest --target "$OUT" ;;
    convert) measure "$1" qemu-img convert -f qcow2 -O qcow2 "$IMAGE" "$OUT/disk.qcow2" ;;
  esac
  if [ "$round" = 1 ]; then  # the output is the source's data (untimed, once)
    local f
    case "$1" in
      vms_qcow2 | vms_raw | convert) f=$(ls "$OUT"/disk.*) ;;
      vnb_u | vnb_c) f=$OUT/data-vdb.qcow2 ;;
      borg | restic) f=$OUT$IMAGE ;;
    esac
    case "$1" in
      borg | restic) cmp -s "$IMAGE" "$f" ;;
      *) qemu-img compare -q "$IMAGE" "$f" ;;
    esac || { log "$1: the restored data differs from $IMAGE"; exit 1; }
    record "outsize_$1" "$(du -s --block-size=1 "$f" | cut -f1)"  # allocated, not apparent
  fi
  rm -rf "$OUT"
}
TOOLS=(vms_qcow2 vms_raw vnb_u vnb_c borg restic convert)
for round in $(seq "$RUNS"); do
  log "round $round/$RUNS (load $(cut -d' ' -f1 /proc/loadavg))"
  record "load_round$round" "$(cut -d' ' -f1 /proc/loadavg)"
  n=${#TOOLS[@]}
  for i in $(seq 0 $((n - 1))); do restore_of "${TOOLS[$(( (i + round - 1) % n ))]}"; done
done

disk_rate disk_rate_after

# --- instant recovery of a lab guest
if [ "$INSTANT" = 1 ]; then
  SRC=$NAME-src
  log "instant recovery: backing up lab guest $SRC"
  bash "$ROOT/tests/lab/new-guest.sh" --name "$SRC" --dir "$W/src" --lab "$LAB" --define >/dev/null
  virsh start "$SRC" >/dev/null
  $PY "$ROOT/bench/live/guest.py" wait-agent "$SRC" 180 ||
    { log "guest $SRC did not come up"; tail -n 20 "$W/src/serial.log" >&2; exit 1; }
  mkdir -p "$W/scratch" "$W/writers.d"
  quietly "${VMS[@]}" --scratch-dir "$W/scratch" backup "$SRC" --json \
    --writers-dir "$W/writers.d" --state-file "$W/writers.json"
  POINT=$($PY -c 'import json,sys; print(json.load(sys.stdin)["vms"][0]["point"])' <"$W/last.out")
  remove_guest "$SRC"
  for round in $(seq "$RUNS"); do
    IR=$NAME-ir$round
    log "instant recovery $round/$RUNS as $IR"
    t0=$(date +%s.%N)
    /usr/bin/time -f "%e %M %U %S" -o "$W/ir-time.txt" "${VMS[@]}" restore "$POINT" --instant \
      --as "$IR" --to "$W/ir$round" --json >"$W/ir.out" 2>"$W/ir.err" &
    IR_PID=$!
    answered=
    while kill -0 "$IR_PID" 2>/dev/null || [ -z "$answered" ]; do
      if virsh qemu-agent-command "$IR" '{"execute":"guest-ping"}' --timeout 2 >/dev/null 2>&1; then
        answered=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")
        break
      fi
      kill -0 "$IR_PID" 2>/dev/null || break
      [ "$(awk "BEGIN { print ($(date +%s.%N) - $t0 > 300) }")" = 1 ] && break
      sleep 0.1
    done
    rc=0; wait "$IR_PID" || rc=$?; IR_PID=
    [ "$rc" = 0 ] || { log "FAILED: vmshadow restore --instant, exit $rc"; cat "$W/ir.err" "$W/ir.out" >&2; exit 1; }
    if [ -z "$answered" ]; then  # the copy ended first: keep polling the now-local VM
      $PY "$ROOT/bench/live/guest.py" wait-agent "$IR" 180 && answered=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")
    fi
    [ -n "$answered" ] || { log "the agent of $IR never answered"; exit 1; }
    read -r -a t < <(tail -n1 "$W/ir-time.txt")
    record ir_agent "$answered"
    echo "ir_total ${t[0]} ${t[1]}" >>"$RES"
    # "running from the repository N s after the command started" (the domain created)
    record ir_running "$($PY -c 'import json,re,sys
m = [re.search(r"running from the repository ([0-9.]+) s", n) for n in json.load(sys.stdin)["notes"]]
print(next((x.group(1) for x in m if x), "nan"))' <"$W/ir.out" 2>/dev/null || echo nan)"
    remove_guest "$IR"
    rm -rf "$W/ir$round"
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "done: load before $LOAD_BEFORE, after $LOAD_AFTER"

$PY "$HERE/report.py" "$RES" "$VMSHADOW" "$LOAD_BEFORE" "$LOAD_AFTER" "$RUNS" "$VNB_VERSION" \
  "$(restic version | cut -d' ' -f2)" "$(borg --version | cut -d' ' -f2)" "$(qemu-img --version | head -n1 | cut -d' ' -f3)" \
  >"$W/report.md"
cat "$W/report.md"
# The report replaces the generated part of RESULTS.md's "Restore (issue 5)" section (between
# its bench/restore markers; the analysis around it is written by hand). RESULTS_MD= skips this.
RESULTS_MD=${RESULTS_MD-$ROOT/bench/RESULTS.md}
if [ -n "$RESULTS_MD" ]; then
  $PY "$ROOT/bench/lib/results.py" write-section "$RESULTS_MD" "$W/report.md" bench/restore
fi
