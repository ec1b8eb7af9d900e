#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The dashboard's end-to-end suite (issue 15), ctest `e2e.dashboard`: a real vmshadowd (HTTPS on
# 127.0.0.1, any free port) with a real lab guest, a repository holding two points of it, an
# admin and an audit token; then dashboard.test.mjs drives Debian's chromium through it with
# playwright-core under `node --test`. Everything it makes (the guest, the daemon, the temp
# dir) goes at exit, on failure and on Ctrl-C too; the whole run is bounded (E2E_TIMEOUT).
#   Environment: VMSHADOWD (build/src/daemon/vmshadowd), VMSHADOW (build/src/cli/vmshadow),
#   VMSHADOW_LAB_DIR (else tests/lab/build-guest.sh), CHROMIUM (/usr/bin/chromium),
#   E2E_TIMEOUT (900 s), E2E_SHOTS (where the screenshots go: VMSHADOW_BUILD_DIR/e2e-screenshots,
#   so a test run leaves the clone as it was; E2E_SHOTS=docs/screenshots refreshes the committed
#   ones; '' = none).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VMSHADOWD=$(realpath "${VMSHADOWD:-$ROOT/build/src/daemon/vmshadowd}")
VMSHADOW=$(realpath "${VMSHADOW:-$ROOT/build/src/cli/vmshadow}")
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
E2E_TIMEOUT=${E2E_TIMEOUT:-900}
export E2E_SHOTS=${E2E_SHOTS-${VMSHADOW_BUILD_DIR:-$ROOT/build}/e2e-screenshots}
log() { printf 'e2e: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ -x "$VMSHADOWD" ] || die "no vmshadowd at $VMSHADOWD (cmake --build build --target vmshadowd)"
[ -x "$VMSHADOW" ] || die "no vmshadow at $VMSHADOW (cmake --build build --target vmshadow)"
[ -x "$CHROMIUM" ] || die "no chromium at $CHROMIUM (scripts/setup-host.sh installs it)"
command -v node >/dev/null || die "node is missing (scripts/setup-host.sh installs it)"
bash "$ROOT/scripts/build-web.sh"  # web/dist, when its sources are newer

# The test's own packages, from its lockfile: again only when the lockfile changed.
if [ ! -f "$HERE/node_modules/.package-lock.json" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

LAB=${VMSHADOW_LAB_DIR:-$(bash "$ROOT/tests/lab/build-guest.sh" | tail -n1)}
W=$(mktemp -d /var/tmp/vmshadow-e2e.XXXXXX)
VM=vmshadow-e2e-$$
DAEMON_PID= NODE_PID=
cleanup() {
  local rc=$?
  set +e
  if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -TERM "$NODE_PID"  # timeout passes it on; playwright closes its chromium
    wait "$NODE_PID" 2>/dev/null
  fi
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID"
    for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  for d in "$VM" "$VM-restored"; do
    virsh destroy "$d" >/dev/null 2>&1
    virsh undefine "$d" --checkpoints-metadata --snapshots-metadata --nvram >/dev/null 2>&1
    rm -f "/var/log/libvirt/qemu/$d.log"
  done
  [ "$rc" -ne 0 ] && [ -f "$W/daemon.log" ] && { log "the daemon's log ends:"; tail -n 20 "$W/daemon.log" >&2; }
  rm -rf "$W"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "guest $VM"
bash "$ROOT/tests/lab/new-guest.sh" --name "$VM" --dir "$W/guest" --lab "$LAB" --define >/dev/null
virsh start "$VM" >/dev/null
for i in $(seq 1 180); do
  virsh qemu-agent-command "$VM" '{"execute":"guest-ping"}' --timeout 2 >/dev/null 2>&1 && break
  [ "$i" -eq 180 ] && die "the guest's agent did not answer in 180 s"
  sleep 1
done

REPO=$W/repo
"$VMSHADOW" -q repo init "$REPO" >/dev/null
for _ in 1 2; do  # two points for the prune simulator to choose between
  "$VMSHADOW" -q --repo "$REPO" backup "$VM" >/dev/null
done

cat >"$W/vmshadowd.toml" <<TOML
[daemon]
listen = "127.0.0.1:0"
scratch-dir = "$W"

[repository.main]
path = "$REPO"

[job.e2e-backup]
kind = "backup"
vms = ["$VM"]
repository = "main"
TOML
mkdir -p "$W/state"
chmod 700 "$W/state"
"$VMSHADOWD" --foreground --state-dir "$W/state" --config "$W/vmshadowd.toml" \
  --web-dir "$ROOT/web/dist" 2>"$W/daemon.log" &
DAEMON_PID=$!
PORT=
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/.*https port \([0-9][0-9]*\).*/\1/p' "$W/daemon.log" | head -n1)
  [ -n "$PORT" ] && break
  kill -0 "$DAEMON_PID" 2>/dev/null || die "vmshadowd exited: $(tail -n 3 "$W/daemon.log")"
  sleep 0.1
done
[ -n "$PORT" ] || die "vmshadowd printed no https port in 10 s"
token() { "$VMSHADOW" --daemon "unix:$W/state/api.sock" token create "$1" --role "$2" 2>/dev/null; }

export E2E_URL=https://127.0.0.1:$PORT/ E2E_VM=$VM E2E_REPO=$REPO E2E_VMSHADOW=$VMSHADOW E2E_TMP=$W
E2E_ADMIN_TOKEN=$(token e2e-admin admin) E2E_AUDIT_TOKEN=$(token e2e-audit audit)
export E2E_ADMIN_TOKEN E2E_AUDIT_TOKEN
log "vmshadowd on $E2E_URL; running the browser tests"
cd "$HERE"
# In the background and waited for, so a TERM to this script runs its cleanup at once (bash
# defers a trap until a foreground command ends).
timeout --kill-after=10 "$E2E_TIMEOUT" node --test dashboard.test.mjs &
NODE_PID=$!
wait "$NODE_PID"
