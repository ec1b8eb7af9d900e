#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Replica benchmark (issue 20), loopback only, on two libvirt hosts of this machine (host A:
# qemu:///system; host B: tests/lab/second-host.sh), each with its own real vmshadowd and
# host certificates from `vmshadow cert`, replicating over mutual TLS on 127.0.0.1/127.0.0.2.
# The guest: a lab guest (256 MiB vda) with its SQLite workload and a blank 4 GiB vdb.
#   1. Cycle: ROUNDS (3) times, 1 % of the 4 GiB disk (41 MiB) is overwritten with random
#      bytes in 64 KiB writes at random 64 KiB-aligned offsets of vdb (655 writes), then one
#      cycle is started through the API and waited for: its wall time (request to task end),
#      and the bytes it put on the wire (the link's bytes_sent before and after).
#   2. RPO: replication is enabled again with a 30 s interval and the daemon's scheduler runs
#      the cycles while the guest writes steadily (the workload, plus 1 MiB of random 64 KiB
#      blocks per second to vdb). For CYCLES (50) intervals the replica's newest point is read
#      every second: RPO = now − that point's time (the primary's read instant). p50, p95 and
#      max of those samples, and the cycles' own times from the daemon's status.
# Goals (issue 20): a cycle ≤ 5 s; RPO p95 ≤ interval + 10 % (33 s).
#   Usage: bench/replica/run.sh path/to/vmshadowd path/to/vmshadow > report.md
#   Environment: CYCLES (50: the RPO phase lasts CYCLES × 30 s, ~25 min), ROUNDS (3),
#   BENCH_DIR (/var/tmp/vmshadow-bench), VMSHADOW_LAB_DIR, RESULTS_MD (bench/RESULTS.md: the
#   report replaces the part between its bench/replica markers; empty: stdout only).
# Bounded: every wait has a limit. Everything it makes (the guest, host B, both daemons and
# their state, the replica) is removed at exit, also on failure or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VMSHADOWD=$(realpath "${1:?usage: bench/replica/run.sh path/to/vmshadowd path/to/vmshadow}")
VMSHADOW=$(realpath "${2:?usage: bench/replica/run.sh path/to/vmshadowd path/to/vmshadow}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
CYCLES=${CYCLES:-50}
ROUNDS=${ROUNDS:-3}
INTERVAL=30
RESULTS_MD=${RESULTS_MD-$ROOT/bench/RESULTS.md}
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
log() { printf 'bench/replica: %s\n' "$*" >&2; }
[[ $CYCLES =~ ^[0-9]+$ && $CYCLES -ge 1 ]] || { log "CYCLES must be a positive number"; exit 2; }

bash "$ROOT/scripts/setup-host.sh" >&2
LAB=${VMSHADOW_LAB_DIR:-$(bash "$ROOT/tests/lab/build-guest.sh" | tail -n1)}

W=$BENCH_DIR/replica-$$
export HOSTB=/run/vmshadow-hostb-bench-$$
NAME=vmshadow-bench-rep-$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  virsh destroy "$NAME" >/dev/null 2>&1 || true
  virsh undefine "$NAME" --checkpoints-metadata --snapshots-metadata --nvram >/dev/null 2>&1 || true
  bash "$ROOT/tests/lab/second-host.sh" down >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT INT TERM
mkdir -p "$W"
URIB=$(bash "$ROOT/tests/lab/second-host.sh" up | tail -n1)
log "host B: $URIB"

# --- the guest
bash "$ROOT/tests/lab/new-guest.sh" --name "$NAME" --dir "$W/guest" --lab "$LAB" --workload \
  --data-disk blank:4G --define >/dev/null
virsh start "$NAME" >/dev/null
for _ in $(seq 1 180); do
  virsh qemu-agent-command "$NAME" '{"execute":"guest-ping"}' --timeout 5 >/dev/null 2>&1 && break
  sleep 1
done
# Runs a shell command in the guest (guest-exec) and waits for it, at most $2 seconds.
gexec() {
  /usr/bin/python3 - "$NAME" "$1" "${2:-600}" <<'PY'
import base64, json, subprocess, sys, time
vm, cmd, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
def agent(req):
    out = subprocess.run(["virsh", "qemu-agent-command", vm, json.dumps(req), "--timeout", "30"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["return"]
pid = agent({"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", cmd],
                                                     "capture-output": True}})["pid"]
end = time.time() + limit
while time.time() < end:
    st = agent({"execute": "guest-exec-status", "arguments": {"pid": pid}})
    if st["exited"]:
        if st.get("exitcode", 0) != 0:
            sys.exit("guest command failed: " + base64.b64decode(st.get("err-data", "")).decode())
        sys.exit(0)
    time.sleep(0.2)
sys.exit("guest command did not end in time")
PY
}

# --- certificates, daemons
"$VMSHADOW" cert ca "$W/ca" --name "bench CA" >/dev/null
"$VMSHADOW" cert issue --ca "$W/ca" --name hosta --ip 127.0.0.1 "$W/hosta" >/dev/null
"$VMSHADOW" cert issue --ca "$W/ca" --name hostb --ip 127.0.0.2 "$W/hostb" >/dev/null
free_port() {
  /usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('$1', 0)); print(s.getsockname()[1])"
}
PORT_A=$(free_port 127.0.0.1)
PORT_B=$(free_port 127.0.0.2)
start_daemon() { # side uri listen allowed-subject
  local d=$W/daemon-$1
  mkdir -p "$d/scratch" "$d/store"
  cat >"$d/vmshadowd.toml" <<TOML
[daemon]
listen = "127.0.0.1:0"
scratch-dir = "$d/scratch"
connect-uri = "$2"

[replica]
certificate = "$W/host$1/host.crt"
key = "$W/host$1/host.key"
ca = "$W/host$1/ca.crt"
listen = "$3"
endpoint = "$3"

[[replica.allow]]
subject = "$4"
storage = "$d/store"
TOML
  "$VMSHADOWD" --foreground --state-dir "$d/state" --config "$d/vmshadowd.toml" 2>"$d/daemon.log" &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    grep -q 'vmshadowd ready' "$d/daemon.log" && return 0
    sleep 0.1
  done
  log "vmshadowd $1 did not start"
  cat "$d/daemon.log" >&2
  exit 1
}
start_daemon a "$LIBVIRT_DEFAULT_URI" "127.0.0.1:$PORT_A" CN=hostb
start_daemon b "$URIB" "127.0.0.2:$PORT_B" CN=hosta
SOCK_A=$W/daemon-a/state/api.sock
SOCK_B=$W/daemon-b/state/api.sock
# api SOCKET METHOD PATH [BODY]
api() { curl -sS --max-time 60 --unix-socket "$1" -X "$2" "http://localhost/api/v1$3" ${4:+-H 'Content-Type: application/json' -d "$4"}; }
jq_() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
link() { # field of host A's primary link for the VM
  api "$SOCK_A" GET /replicas | jq_ "next((r.get('$1') for r in d['replicas'] if r['vm'] == '$NAME' and r['role'] == 'primary'), None)"
}
# A cycle now, through the API, waited for (again while a scheduled one holds the VM).
cycle_now() {
  local answer id st
  for _ in $(seq 1 60); do
    answer=$(api "$SOCK_A" POST "/replicas/$NAME/cycle" '{}')
    id=$(jq_ "d.get('task', '')" <<<"$answer")
    [ -n "$id" ] && break
    sleep 2
  done
  [ -n "$id" ] || { log "no cycle task: $answer"; exit 1; }
  for _ in $(seq 1 3000); do
    st=$(api "$SOCK_A" GET "/tasks/$id" | jq_ "d['state']")
    case $st in queued | running) sleep 0.1 ;; ok) return 0 ;; *)
      log "cycle task $id ended $st: $(api "$SOCK_A" GET "/tasks/$id")"
      exit 1 ;;
    esac
  done
  log "cycle task $id did not end in 300 s"
  exit 1
}
enable() {
  api "$SOCK_A" POST /replicas "{\"vm\": \"$NAME\", \"to\": \"127.0.0.2:$PORT_B\", \"interval_s\": $1}" >"$W/enable.json"
  jq_ "d['vm']" <"$W/enable.json" >/dev/null || { log "enable: $(cat "$W/enable.json")"; exit 1; }
}
now() { date +%s.%N; }

# --- 1. cycle time and bytes on the wire for 1 % random writes
log "phase 1: initial copy"
T0=$(now)
enable 900
cycle_now
INITIAL_S=$(/usr/bin/python3 -c "print(f'{$(now) - $T0:.1f}')")
INITIAL_BYTES=$(link bytes_sent)
WRITE_BLOCKS=$((4 * 1024 * 1024 * 1024 / 100 / 65536))
: >"$W/rounds"
for r in $(seq 1 "$ROUNDS"); do
  offsets=$(/usr/bin/python3 -c "import random; r = random.Random($r); print(' '.join(map(str, r.sample(range(65536), $WRITE_BLOCKS))))")
  gexec "for o in $offsets; do dd if=/dev/urandom of=/dev/vdb bs=65536 count=1 seek=\$o conv=notrunc 2>/dev/null; done; sync"
  before=$(link bytes_sent)
  t=$(now)
  cycle_now
  t=$(/usr/bin/python3 -c "print(f'{$(now) - $t:.2f}')")
  echo "$t $(($(link bytes_sent) - before))" >>"$W/rounds"
  log "round $r: $t s, $(($(link bytes_sent) - before)) bytes"
done

# --- 2. RPO over CYCLES cycles at a 30 s interval under steady writes
log "phase 2: $CYCLES cycles at ${INTERVAL} s"
api "$SOCK_A" POST "/replicas/$NAME/remove" '{"on_replica": true}' >/dev/null
gexec "echo 'while :; do o=\$(awk \"BEGIN { srand(); print int(rand() * 4096) * 16 }\"); dd if=/dev/urandom of=/dev/vdb bs=65536 count=16 seek=\$o conv=notrunc 2>/dev/null; sleep 1; done' >/run/writer.sh" 30
# (busybox here has no nohup; a child of guest-exec's shell lives on once that shell exits)
gexec "sh /run/writer.sh </dev/null >/dev/null 2>&1 &" 30
enable "$INTERVAL"
points_b() { api "$SOCK_B" GET "/replicas/$NAME/points" | jq_ "len(d.get('points') or [])" 2>/dev/null || echo 0; }
for _ in $(seq 1 900); do [ "$(points_b)" -gt 0 ] && break; sleep 1; done
[ "$(points_b)" -gt 0 ] || { log "no point on the replica 900 s after enable"; exit 1; }
SENT0=$(link bytes_sent)
# The sampler: once the first point exists, every second for CYCLES intervals, the replica's
# newest point time (host B) and host A's own RPO figure.
/usr/bin/python3 - "$SOCK_B" "$NAME" $((CYCLES * INTERVAL)) "$W/rpo.txt" >&2 <<'PY'
import datetime, http.client, json, socket, sys, time
sock, vm, duration, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock)
def newest():
    c = Unix("localhost", timeout=30)
    c.request("GET", f"/api/v1/replicas/{vm}/points")
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        return None
    pts = json.loads(body).get("points") or []
    if not pts:
        return None
    t = pts[-1]["time"].replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(t).timestamp(), pts[-1]["seq"]
end_wait = time.time() + 900
while newest() is None:
    if time.time() > end_wait:
        sys.exit("no point on the replica after 900 s")
    time.sleep(1)
first = newest()[1]
with open(out, "w") as f:
    end = time.time() + duration
    while time.time() < end:
        n = newest()
        if n:
            f.write(f"{time.time() - n[0]:.2f} {n[1]}\n")
            f.flush()
        time.sleep(1)
print(f"first point {first}", file=sys.stderr)
PY
STATUS=$(api "$SOCK_A" GET /replicas)
SENT_STEADY=$(($(link bytes_sent) - SENT0))
read -r RPO_P50 RPO_P95 RPO_MAX SAMPLES POINTS < <(/usr/bin/python3 - "$W/rpo.txt" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
v = sorted(float(r[0]) for r in rows)
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
seqs = {int(r[1]) for r in rows}
print(f"{q(0.5):.1f} {q(0.95):.1f} {v[-1]:.1f} {len(v)} {max(seqs) - min(seqs)}")
PY
)
field() { jq_ "next((r.get('$1') for r in d['replicas'] if r['vm'] == '$NAME' and r['role'] == 'primary'), None)" <<<"$STATUS"; }
AVG_S=$(printf '%.2f' "$(field avg_cycle_s)")
MAX_S=$(printf '%.2f' "$(field max_cycle_s)")
MISSED=$(field missed_cycles)
STATE=$(field state)
read -r CYC_MED CYC_MAX BYTES_MED < <(/usr/bin/python3 - "$W/rounds" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
t = [float(r[0]) for r in rows]
b = [int(r[1]) for r in rows]
print(f"{statistics.median(t):.2f} {max(t):.2f} {int(statistics.median(b))}")
PY
)
mib() { /usr/bin/python3 -c "print(f'{$1 / 1048576:.1f}')"; }

REPORT=$(cat <<MD
Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1 /proc/loadavg) at the end. Binaries: \`$VMSHADOWD\`, \`$VMSHADOW\`. Command: \`bench/replica/run.sh $VMSHADOWD $VMSHADOW\` (CYCLES=$CYCLES, ROUNDS=$ROUNDS). Host B: \`tests/lab/second-host.sh\` on the same machine; replica traffic mutual TLS over 127.0.0.1 → 127.0.0.2.

| 1 % of a 4 GiB disk changed ($WRITE_BLOCKS random 64 KiB writes), TCG guest with its workload | measured | goal |
|---|---|---|
| cycle time (request to task end), median of $ROUNDS | $CYC_MED s (max $CYC_MAX s) | ≤ 5 s |
| bytes on the wire per cycle, median | $(mib "$BYTES_MED") MiB (41 MiB changed, random: incompressible) | – |
| initial copy (256 MiB vda, 4 GiB vdb mostly empty) | $INITIAL_S s, $(mib "$INITIAL_BYTES") MiB | – |

| $CYCLES intervals of ${INTERVAL} s, steady writes (workload + 1 MiB/s random to vdb) | measured | goal |
|---|---|---|
| RPO (now − newest point on the replica), sampled each second | p50 $RPO_P50 s, p95 $RPO_P95 s, max $RPO_MAX s ($SAMPLES samples) | p95 ≤ 33 s |
| points made during the sampling; bytes sent, per point | $POINTS; $(mib "$SENT_STEADY") MiB, $(mib "$((SENT_STEADY / (POINTS > 0 ? POINTS : 1)))") MiB | ≈ $CYCLES; – |
| cycle time, daemon's own figure | avg $AVG_S s, max $MAX_S s | ≤ 5 s |
| missed cycles; state at the end | $MISSED; $STATE | 0; normal |
MD
)
echo "$REPORT"
if [ -n "$RESULTS_MD" ]; then
  printf '%s\n' "$REPORT" >"$W/report.md"
  /usr/bin/python3 "$ROOT/bench/lib/results.py" write-section "$RESULTS_MD" "$W/report.md" bench/replica
fi
