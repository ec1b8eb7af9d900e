#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# vmshadowd benchmark (issue 14): the API's latency under load while a backup runs, and what
# the idle daemon costs.
#   1. Idle: the real vmshadowd (its own state dir, a repository, one backup job on a lab
#      guest, HTTPS on 127.0.0.1) is left alone for $IDLE_S seconds (60); its CPU time
#      (utime + stime from /proc/PID/stat) and RSS (VmRSS, sampled each second) are measured.
#   2. Load: a backup of the lab guest runs (started again whenever it ends) while wrk, with
#      50 connections over 2 threads, calls GET /api/v1/vms and then GET /api/v1/tasks for
#      $LOAD_S seconds (20) each, over HTTPS with an audit token. wrk's latency
#      distribution gives p50 and p99. Bounded: loopback only, fixed duration, then stops.
# Goals: p99 <= 50 ms; idle <= 0.5 % of a core and <= 40 MiB RSS. There is no peer in
# Debian 12 to run beside it (Proxmox Backup Server's API is not packaged there), so the
# figures stand alone.
#   Usage: bench/daemon/run.sh path/to/vmshadowd path/to/vmshadow > report.md
#   Environment: BENCH_DIR (/var/tmp/vmshadow-bench), IDLE_S (60), LOAD_S (20),
#   VMSHADOW_LAB_DIR, RESULTS_MD (bench/RESULTS.md: the report replaces the part between its
#   bench/daemon markers; empty: stdout only).
# Everything it makes (the guest, the daemon, its state, the repository) is removed at exit,
# also on failure or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VMSHADOWD=$(realpath "${1:?usage: bench/daemon/run.sh path/to/vmshadowd path/to/vmshadow}")
VMSHADOW=$(realpath "${2:?usage: bench/daemon/run.sh path/to/vmshadowd path/to/vmshadow}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
IDLE_S=${IDLE_S:-60}
LOAD_S=${LOAD_S:-20}
RESULTS_MD=${RESULTS_MD-$ROOT/bench/RESULTS.md}
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
export DEBIAN_FRONTEND=noninteractive
log() { printf 'bench/daemon: %s\n' "$*" >&2; }

bash "$ROOT/scripts/setup-host.sh" >&2
for p in wrk curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    apt-get install -y -q "$p" >/dev/null
done
LAB=${VMSHADOW_LAB_DIR:-$(bash "$ROOT/tests/lab/build-guest.sh" | tail -n1)}
bash "$ROOT/tests/lab/lab-network.sh" ensure >/dev/null

W=$BENCH_DIR/daemon-$$
NAME=vmshadow-bench-dmn-$$
DPID=
cleanup() {
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
  virsh destroy "$NAME" >/dev/null 2>&1 || true
  virsh undefine "$NAME" --checkpoints-metadata --snapshots-metadata --nvram >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT INT TERM
mkdir -p "$W/scratch"

log "guest $NAME"
bash "$ROOT/tests/lab/new-guest.sh" --name "$NAME" --dir "$W/guest" --lab "$LAB" --define >/dev/null
virsh start "$NAME" >/dev/null
for _ in $(seq 1 180); do
  virsh qemu-agent-command "$NAME" '{"execute":"guest-ping"}' --timeout 5 >/dev/null 2>&1 && break
  sleep 1
done
"$VMSHADOW" repo init "$W/repo" >/dev/null
cat >"$W/vmshadowd.toml" <<TOML
[daemon]
listen = "127.0.0.1:0"
scratch-dir = "$W/scratch"
connect-uri = "$LIBVIRT_DEFAULT_URI"
[repository.main]
path = "$W/repo"
[job.bench]
kind = "backup"
vms = ["$NAME"]
repository = "main"
schedule = "hourly"
TOML
"$VMSHADOWD" --foreground --state-dir "$W/state" --config "$W/vmshadowd.toml" 2>"$W/daemon.log" &
DPID=$!
PORT=
for _ in $(seq 1 300); do
  PORT=$(sed -n 's/.*https port \([0-9]*\).*/\1/p' "$W/daemon.log" | head -n1)
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { log "vmshadowd did not start"; cat "$W/daemon.log" >&2; exit 1; }
SOCK=$W/state/api.sock
api() { curl -sS --unix-socket "$SOCK" -X "$1" "http://localhost/api/v1$2" ${3:+-d "$3"}; }
TOKEN=$(api POST /tokens '{"name":"bench","role":"audit"}' | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
api GET /vms >/dev/null  # the inventory cache is filled once, as any first client does

# --- 1. idle
ticks() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }
sleep 5
T0=$(ticks); RSS_MAX=0; RSS_SUM=0
for _ in $(seq 1 "$IDLE_S"); do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$DPID/status")
  RSS_SUM=$((RSS_SUM + rss)); [ "$rss" -gt "$RSS_MAX" ] && RSS_MAX=$rss
  sleep 1
done
T1=$(ticks)
HZ=$(getconf CLK_TCK)
IDLE_CPU=$(/usr/bin/python3 -c "print(f'{100 * ($T1 - $T0) / $HZ / $IDLE_S:.3f}')")
RSS_MEAN_MIB=$(/usr/bin/python3 -c "print(f'{$RSS_SUM / $IDLE_S / 1024:.1f}')")
RSS_MAX_MIB=$(/usr/bin/python3 -c "print(f'{$RSS_MAX / 1024:.1f}')")
log "idle: ${IDLE_CPU}% of a core, RSS mean $RSS_MEAN_MIB MiB, max $RSS_MAX_MIB MiB"

# --- 2. load, while a backup runs (restarted when it ends)
keep_backing_up() {
  while [ ! -f "$W/stop" ]; do
    id=$(api POST /jobs/bench/run | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["task"])')
    while [ ! -f "$W/stop" ]; do
      st=$(api GET "/tasks/$id" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
      case $st in queued|running) sleep 0.5 ;; *) echo "$st" >>"$W/backups"; break ;; esac
    done
  done
}
keep_backing_up &
BPID=$!
for _ in $(seq 1 120); do  # until the backup is running
  api GET "/tasks?state=running" | grep -q '"kind":"backup"' && break
  sleep 0.5
done
run_wrk() {
  wrk -t2 -c50 -d"${LOAD_S}s" --timeout 5s --latency -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$PORT/api/v1$1" >"$W/wrk-$2.txt" 2>&1
}
run_wrk /vms vms
run_wrk "/tasks?limit=50" tasks
touch "$W/stop"
wait "$BPID" || true
pct() { awk -v p="$2" '$1 == p {print $2}' "$W/wrk-$1.txt"; }
reqs() { awk '/requests in/ {print $1}' "$W/wrk-$1.txt"; }
errs() { awk '/Non-2xx|Socket errors/ {print}' "$W/wrk-$1.txt" | tr '\n' ' '; }
BACKUPS=$(sort "$W/backups" 2>/dev/null | uniq -c | tr '\n' ' ')

REPORT=$(cat <<MD
Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1 /proc/loadavg) at the end. Binary: \`$VMSHADOWD\`. Command: \`bench/daemon/run.sh $VMSHADOWD $VMSHADOW\` (IDLE_S=$IDLE_S, LOAD_S=$LOAD_S).

| route (50 connections, 2 wrk threads, HTTPS, audit token, a backup running) | requests | p50 | p99 | goal p99 |
|---|---|---|---|---|
| \`GET /api/v1/vms\` | $(reqs vms) | $(pct vms 50%) | $(pct vms 99%) | ≤ 50 ms |
| \`GET /api/v1/tasks?limit=50\` | $(reqs tasks) | $(pct tasks 50%) | $(pct tasks 99%) | ≤ 50 ms |

Errors: vms: $(errs vms) tasks: $(errs tasks) (none when empty). Backups during the load: $BACKUPS.

| idle daemon over ${IDLE_S} s | measured | goal |
|---|---|---|
| CPU | ${IDLE_CPU} % of a core | ≤ 0.5 % |
| RSS | mean ${RSS_MEAN_MIB} MiB, max ${RSS_MAX_MIB} MiB | ≤ 40 MiB |
MD
)
echo "$REPORT"
if [ -n "$RESULTS_MD" ]; then
  printf '%s\n' "$REPORT" >"$W/report.md"
  /usr/bin/python3 "$ROOT/bench/lib/results.py" write-section "$RESULTS_MD" "$W/report.md" bench/daemon
fi
