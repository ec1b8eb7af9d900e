#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Live-backup benchmark (issue 4): vmshadow backup vs virtnbdbackup 1.9 (Debian package) on one
# running lab guest (TCG, agent on, workload off) with two disks: the lab root disk (vda, 256 MiB)
# and a 4 GiB qcow2 data disk (vdb) holding a real Debian system plus ~1.2 GB of files (the image
# of bench/repo/build-image.sh). $ROUNDS rounds, each tool's phase alternating first: a full
# backup, a 1% change inside the guest ($CHANGE_MIB MiB of random bytes written over a file of
# the data disk's filesystem through the agent's guest-exec, fsync + sync), an incremental.
# virtnbdbackup runs twice per round (uncompressed and --compress, each its own chain). Wall time,
# CPU and peak RSS via /usr/bin/time, repository size via du -sb, vmshadow's freeze window from its
# --json output over >= $FREEZE_SAMPLES backups, next to as many samples of its floor (the bare
# libvirt freeze → backup begin → thaw, freeze-floor.py). Prints a Markdown report on stdout.
#
# virtnbdbackup quirks met here (1.9.15 with libvirt 9.0):
#  - it refuses full/inc when the VM has a checkpoint it did not create ("Foreign checkpoint
#    found"), so the two tools can't keep chains on one VM at once: each tool's phase starts
#    and ends with no checkpoints (all deleted with virsh between phases), and each tool gets
#    its own 1% change of the same size;
#  - a full backup deletes every virtnbdbackup.* checkpoint (its previous chain, on any target);
#  - it polls for its NBD socket (~1 s) before reading; -f puts that socket in our work dir;
#  - every backup also copies the domain's kernel and initrd (15 MB here) into the target;
#  - it is Python: /usr/bin/python3 with python3-libvirt and python3-libnbd (a pyenv python3
#    on PATH can't import them; its shebang is /usr/bin/python3, so it works anyway).
#
# Bench-only dependencies (not in scripts/setup-host.sh): virtnbdbackup time (debootstrap
# through build-image.sh). The guest has no NIC, so the lab network is not needed. Everything
# it creates (domain, its directory, scratch, sockets, checkpoints, libvirt's QEMU log) is
# removed at exit, also on failure or Ctrl-C; guests of killed runs are reaped at the start.
#   Usage: bench/live/run.sh path/to/vmshadow > report.md
#   Environment: ROUNDS (3), FREEZE_SAMPLES (12), CHANGE_MIB (40), BENCH_DIR
#   (/var/tmp/vmshadow-bench), LIBVIRT_DEFAULT_URI (qemu:///system), VMSHADOW_LAB_DIR,
#   RESULTS_MD (bench/RESULTS.md: the report replaces the part between its bench/live markers;
#   empty: stdout only).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VMSHADOW=$(realpath "${1:?usage: bench/live/run.sh path/to/vmshadow > report.md}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
ROUNDS=${ROUNDS:-3}
FREEZE_SAMPLES=${FREEZE_SAMPLES:-12}
CHANGE_MIB=${CHANGE_MIB:-40}
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
export DEBIAN_FRONTEND=noninteractive
PY=/usr/bin/python3
RUN_ROOT=$BENCH_DIR/live-run
NAME_PREFIX=vmshadow-bench-live
log() { printf 'bench/live: %s\n' "$*" >&2; }

[ -x "$VMSHADOW" ] || { log "$VMSHADOW is not executable"; exit 2; }
bash "$ROOT/scripts/setup-host.sh"  # packages of the lab, libvirtd running
for p in virtnbdbackup time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    apt-get install -y -q "$p" >/dev/null
done
HAVE_VMS=1
# (`vmshadow backup --help` prints the global help with exit 0 even without the command)
if ! "$VMSHADOW" --help 2>/dev/null | grep -qE '^ +backup +'; then
  HAVE_VMS=0
  log "$VMSHADOW has no 'backup' command: measuring virtnbdbackup only"
fi

# --- the data disk image: bench/repo/build-image.sh's image, keyed by that recipe. An image
# without a recipe stamp (built before stamps existed) is adopted, as bench/repo/run.sh does.
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

# --- guests of earlier runs that were killed before their trap ran
reap_stale() {
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
remove_guest() {  # domain (and its backup jobs), checkpoints metadata, vmshadow run dirs
  local vm=$1 uuid
  uuid=$(virsh domuuid "$vm" 2>/dev/null || true)
  virsh destroy "$vm" >/dev/null 2>&1 || true
  virsh undefine "$vm" --checkpoints-metadata --snapshots-metadata >/dev/null 2>&1 || true
  [ -n "$uuid" ] && rm -rf /run/vmshadow/backup/"$uuid".* 2>/dev/null || true
  rm -f "/var/log/libvirt/qemu/$vm.log"  # libvirt's log of the guest's QEMU
}

NAME=$NAME_PREFIX-$$-$RANDOM
W=$RUN_ROOT/$NAME
cleanup() {
  local rc=$?
  remove_guest "$NAME"
  rm -rf "$W"
  rmdir "$RUN_ROOT" 2>/dev/null || true
  [ "$rc" = 0 ] || log "failed (exit $rc); guest $NAME and $W removed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
reap_stale

LAB=${VMSHADOW_LAB_DIR:-$(bash "$ROOT/tests/lab/build-guest.sh" | tail -n1)}
mkdir -p "$RUN_ROOT"
log "guest $NAME in $W"
bash "$ROOT/tests/lab/new-guest.sh" --name "$NAME" --dir "$W/guest" --lab "$LAB" \
  --data-disk blank:4G --define >/dev/null
cp --sparse=always "$IMAGE" "$W/guest/data-vdb.qcow2"  # the blank vdb becomes the Debian disk
mkdir -p "$W/scratch" "$W/writers.d"
RES=$W/results.txt
: >"$RES"
: >"$W/failures.txt"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
virsh start "$NAME" >/dev/null
$PY "$HERE/guest.py" wait-agent "$NAME" 120 ||
  { log "guest did not come up; serial log:"; tail -n 20 "$W/guest/serial.log" >&2; exit 1; }
$PY "$HERE/guest.py" exec "$NAME" 30 'grep -q " /data/vdb ext4 " /proc/mounts && [ -d /data/vdb/srv/data ]' ||
  { log "the data disk is not mounted at /data/vdb in the guest"; exit 1; }
CHANGE_FILE=/data/vdb/bench-change.bin
$PY "$HERE/guest.py" exec "$NAME" 120 \
  "dd if=/dev/urandom of=$CHANGE_FILE bs=1M count=$CHANGE_MIB conv=fsync 2>/dev/null && sync"

# measure NAME CMD...: appends "NAME seconds max_rss_kib" to the results; stdout in $W/last.out.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$W/time.txt" "$@" >"$W/last.out" 2>"$W/last.err" ||
    { log "FAILED: $name: $*"; tail -n 20 "$W/last.err" >&2; cat "$W/last.out" >&2; exit 1; }
  record_time "$name"
}
# record_time NAME: wall seconds and peak RSS, and CPU seconds (user + sys) as NAME_cpu.
record_time() {
  local t; read -r -a t < <(tail -n1 "$W/time.txt")
  echo "$1 ${t[0]} ${t[1]}" >>"$RES"
  echo "$1_cpu $(awk "BEGIN { print ${t[2]} + ${t[3]} }") 0" >>"$RES"
}
size_of() { du -sb "$1" | cut -f1; }
record() { echo "$1 $2 0" >>"$RES"; }  # a value, in the seconds column

# The 1% change: CHANGE_MIB MiB of fresh random bytes over the same file, in place (no
# allocation, so every round changes the same amount), flushed to the disk.
change() {
  $PY "$HERE/guest.py" exec "$NAME" 120 \
    "dd if=/dev/urandom of=$CHANGE_FILE bs=1M count=$CHANGE_MIB conv=notrunc,fsync 2>/dev/null && sync"
}
# Every checkpoint of the guest, newest first (no bitmap merging): the next phase starts clean.
drop_checkpoints() {
  local c
  for c in $(virsh checkpoint-list "$NAME" --name --topological | tac); do
    virsh checkpoint-delete "$NAME" "$c" >/dev/null 2>&1 ||
      virsh checkpoint-delete "$NAME" "$c" --metadata >/dev/null
  done
}

VNB=(virtnbdbackup -d "$NAME" -n -f "$W/vnb.sock" -S "$W/scratch")
vnb_chain() {  # vnb_chain LABEL [--compress]
  local t=$1; shift
  rm -rf "$W/vnb-$t"
  measure "vnb_${t}_full" "${VNB[@]}" -l full "$@" -o "$W/vnb-$t"
  local s; s=$(size_of "$W/vnb-$t")
  record "size_vnb_${t}_full" "$s"
  change
  measure "vnb_${t}_inc" "${VNB[@]}" -l inc "$@" -o "$W/vnb-$t"
  record "growth_vnb_${t}_inc" $(( $(size_of "$W/vnb-$t") - s ))
  record "size_vnb_${t}_total" "$(size_of "$W/vnb-$t")"
}
phase_virtnbdbackup() {
  log "round $1: virtnbdbackup"
  drop_checkpoints
  vnb_chain u
  vnb_chain c --compress
  rm -rf "$W/vnb-u" "$W/vnb-c"
  drop_checkpoints
}

PARSE_JSON='
import json, sys
vm = json.load(sys.stdin)["vms"][0]
name = sys.argv[1]
for key in ("freeze_ms", "quiesce_ms", "bytes_read", "bytes_added"):
    if vm.get(key) is not None:
        print(name + "_" + key, vm[key], 0)
        if key in ("freeze_ms", "quiesce_ms"):  # samples over every backup
            print("all_" + key, vm[key], 0)
print("method_" + str(vm.get("method")) + "_" + str(vm.get("consistency")), 1, 0)
for d in vm.get("disks") or []:  # per-disk read mode (full / incremental), beyond the contract
    print("diskmode_" + name + "_" + str(d.get("disk")) + "_" + str(d.get("mode")).replace(" ", "-"), 1, 0)
'
VMS=("$VMSHADOW" --repo "$W/repo" --scratch-dir "$W/scratch")
vms_backup() {  # vms_backup NAME: one measured `vmshadow backup --json`, its JSON recorded.
  # A failed backup is recorded (failures.txt, in the report) and returns 1; the run goes on.
  # Host writers of /etc/vmshadow and the global writer state stay out of it: an empty
  # writers dir, a state file of our own.
  local rc=0
  /usr/bin/time -f "%e %M %U %S" -o "$W/time.txt" "${VMS[@]}" backup "$NAME" --json \
    --writers-dir "$W/writers.d" --state-file "$W/writers.json" >"$W/last.out" 2>"$W/last.err" || rc=$?
  cat "$W/last.out" >>"$W/vmshadow.jsonl"
  if [ "$rc" != 0 ]; then
    log "FAILED: vmshadow backup ($1), exit $rc"
    echo "$1 exit $rc: $($PY -c 'import json,sys; print(json.load(sys.stdin)["error"])' <"$W/last.out" 2>/dev/null ||
      tail -n 3 "$W/last.err")" >>"$W/failures.txt"
    return 1
  fi
  record_time "$1"
  $PY -c "$PARSE_JSON" "$1" <"$W/last.out" >>"$RES"
}
phase_vmshadow() {
  log "round $1: vmshadow"
  drop_checkpoints
  rm -rf "$W/repo"
  "$VMSHADOW" --repo "$W/repo" repo init "$W/repo" >/dev/null
  local s ok=1
  if vms_backup vms_full; then
    s=$(size_of "$W/repo")
    record size_vms_full "$s"
    change
    if vms_backup vms_inc; then
      record growth_vms_inc $(( $(size_of "$W/repo") - s ))
      record size_vms_total "$(size_of "$W/repo")"
    else
      ok=0
    fi
  else
    ok=0
  fi
  if [ "$1" = "$ROUNDS" ] && [ "$ok" = 1 ]; then  # more freeze-window samples: incrementals
    local n=$((2 * ROUNDS))                       # after small changes
    while [ "$n" -lt "$FREEZE_SAMPLES" ]; do
      $PY "$HERE/guest.py" exec "$NAME" 60 \
        "dd if=/dev/urandom of=$CHANGE_FILE bs=64k count=16 conv=notrunc,fsync 2>/dev/null && sync"
      vms_backup vms_extra || break
      n=$((n + 1))
    done
  fi
  rm -rf "$W/repo"
  drop_checkpoints
  # The same number of samples of the bare libvirt freeze → backup begin → thaw (the floor).
  $PY "$HERE/freeze-floor.py" "$NAME" "$W" $(( (FREEZE_SAMPLES + ROUNDS - 1) / ROUNDS )) >>"$RES"
}

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    phase_virtnbdbackup "$round"; [ "$HAVE_VMS" = 0 ] || phase_vmshadow "$round"
  else
    [ "$HAVE_VMS" = 0 ] || phase_vmshadow "$round"; phase_virtnbdbackup "$round"
  fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "done: load before $LOAD_BEFORE, after $LOAD_AFTER"
ls -A "$W/scratch" | grep -q . && log "leftover scratch files: $(ls -A "$W/scratch")"
[ -z "$(virsh checkpoint-list "$NAME" --name)" ] || log "leftover checkpoints"

$PY "$HERE/report.py" "$RES" "$VMSHADOW" "$LOAD_BEFORE" "$LOAD_AFTER" "$ROUNDS" "$CHANGE_MIB" \
  "$(virtnbdbackup -V 2>&1 | tail -n1)" "$W/failures.txt" >"$W/report.md"
cat "$W/report.md"
if [ "$HAVE_VMS" = 1 ]; then
  echo
  echo "vmshadow \`backup --json\` outputs, in order:"
  echo
  echo '```'
  cat "$W/vmshadow.jsonl"
  echo '```'
fi
# The report also replaces the generated part of RESULTS.md's "Live backup" section (between
# its bench/live markers; the analysis around it is written by hand). RESULTS_MD= skips this.
RESULTS_MD=${RESULTS_MD-$ROOT/bench/RESULTS.md}
if [ -n "$RESULTS_MD" ]; then
  $PY "$ROOT/bench/lib/results.py" write-section "$RESULTS_MD" "$W/report.md" bench/live
fi
