#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quickstart 1: sets up this host (packages, libvirtd), builds vmshadow, creates a small demo
# VM from the lab guest (its agent and a SQLite workload run on its own disk) and runs the
# main job on it. Idempotent: a second run reuses the host setup, the build and the demo VM.
#   scripts/demo.sh            set up and run the demo; leaves vmshadowd protecting the demo VM
#   scripts/demo.sh --remove   remove the demo VM, its restored copy, their files and the repository
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_VM=${VMSHADOW_DEMO_VM:-vmshadow-demo}
DEMO_DIR=${VMSHADOW_DEMO_DIR:-/var/lib/vmshadow/demo/$DEMO_VM}
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
say() { printf '\n== %s\n' "$*"; }

if [ "${1:-}" = "--remove" ]; then
  for vm in "$DEMO_VM" "$DEMO_VM-restored"; do
    virsh destroy "$vm" >/dev/null 2>&1 || true
    virsh undefine "$vm" --checkpoints-metadata --snapshots-metadata >/dev/null 2>&1 || true
  done
  if pid=$(cat /var/lib/vmshadow/vmshadowd.pid 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
    if [ -d /run/systemd/system ]; then systemctl stop vmshadowd; else kill "$pid"; fi
  fi
  if grep -q "^\[job.demo\]" /etc/vmshadow/vmshadowd.toml 2>/dev/null; then
    rm -f /etc/vmshadow/vmshadowd.toml
  fi
  rm -rf "$DEMO_DIR"
  echo "demo VMs $DEMO_VM and $DEMO_VM-restored removed, vmshadowd stopped"
  exit 0
fi

say "setting up the host (packages, libvirtd)"
bash scripts/setup-host.sh
say "building vmshadow"
bash scripts/build.sh
VMSHADOW=$PWD/build/src/cli/vmshadow
say "building the lab guest (cached after the first run)"
VMSHADOW_LAB_DIR=$(bash tests/lab/build-guest.sh | tail -n1)
export VMSHADOW_LAB_DIR

if ! virsh dominfo "$DEMO_VM" >/dev/null 2>&1; then
  say "creating demo VM $DEMO_VM in $DEMO_DIR"
  rm -rf "$DEMO_DIR"
  bash tests/lab/new-guest.sh --name "$DEMO_VM" --dir "$DEMO_DIR" --workload --nic --define >/dev/null
fi
if [ "$(virsh domstate "$DEMO_VM")" != "running" ]; then
  virsh start "$DEMO_VM" >/dev/null
fi

say "waiting for the guest agent in $DEMO_VM"
for _ in $(seq 1 120); do
  if "$VMSHADOW" vm list --json "$DEMO_VM" 2>/dev/null | grep -q '"method": "application"'; then break; fi
  sleep 1
done

say "vmshadow vm list"
"$VMSHADOW" vm list
say "vmshadow vm freeze $DEMO_VM (the guest's hook checkpoints its database, then it thaws)"
"$VMSHADOW" vm freeze "$DEMO_VM"

DEMO_REPO=$DEMO_DIR/repo
export VMSHADOW_REPO=$DEMO_REPO
if [ ! -f "$DEMO_REPO/config" ]; then
  say "vmshadow repo init $DEMO_REPO"
  "$VMSHADOW" repo init "$DEMO_REPO"
fi
say "vmshadow backup $DEMO_VM (application-consistent; full the first time)"
"$VMSHADOW" backup "$DEMO_VM"
say "vmshadow backup $DEMO_VM again (incremental: only what the guest changed since)"
"$VMSHADOW" backup "$DEMO_VM"
say "vmshadow points $DEMO_VM"
"$VMSHADOW" points "$DEMO_VM"

RESTORED_VM=$DEMO_VM-restored
if virsh dominfo "$RESTORED_VM" >/dev/null 2>&1; then
  virsh destroy "$RESTORED_VM" >/dev/null 2>&1 || true
  virsh undefine "$RESTORED_VM" --checkpoints-metadata --snapshots-metadata >/dev/null 2>&1 || true
fi
rm -rf "$DEMO_DIR/restored"
say "vmshadow restore $DEMO_VM@latest --as $RESTORED_VM --start (a copy beside the original)"
"$VMSHADOW" restore "$DEMO_VM@latest" --as "$RESTORED_VM" --to "$DEMO_DIR/restored" --start
say "waiting for the restored VM's guest agent (its agent lives on the restored disk)"
booted=no
for _ in $(seq 1 180); do
  if virsh qemu-agent-command "$RESTORED_VM" '{"execute":"guest-ping"}' --timeout 5 >/dev/null 2>&1; then
    booted=yes
    break
  fi
  sleep 1
done
if [ "$booted" = yes ]; then
  say "$RESTORED_VM booted from the restored disk and its agent answers"
else
  echo "demo: $RESTORED_VM did not answer within 180 s; see $DEMO_DIR/restored/serial.log" >&2
  exit 1
fi
say "installing vmshadow and vmshadowd (cmake --install build, under /usr/local)"
cmake --install build --prefix /usr/local >/dev/null
DAEMON_CONFIG=/etc/vmshadow/vmshadowd.toml
if [ ! -f "$DAEMON_CONFIG" ]; then
  say "writing $DAEMON_CONFIG: back up $DEMO_VM every 15 minutes, keep 8 hourly and 7 daily points"
  mkdir -p /etc/vmshadow
  cat >"$DAEMON_CONFIG" <<TOML
# vmshadowd's jobs and settings (docs/DAEMON.md). Reload with: kill -HUP \$(cat /var/lib/vmshadow/vmshadowd.pid)
[daemon]
connect-uri = "$LIBVIRT_DEFAULT_URI"

[repository.demo]
path = "$DEMO_REPO"

[job.demo]
kind = "backup"
vms = ["$DEMO_VM"]
repository = "demo"
schedule = "*:0/15"
keep-hourly = 8
keep-daily = 7
alert-after-hours = 2
TOML
fi
# (Re)started, so a rebuilt vmshadowd is the one that runs; a stop cancels what it runs cleanly.
if [ -d /run/systemd/system ]; then
  say "starting vmshadowd.service (systemd)"
  systemctl daemon-reload
  systemctl enable vmshadowd >/dev/null
  systemctl restart vmshadowd
else
  if pid=$(cat /var/lib/vmshadow/vmshadowd.pid 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
    say "stopping the running vmshadowd (pid $pid) to start the one just installed"
    kill "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  say "starting vmshadowd (no init system here: it detaches; log in /var/lib/vmshadow/vmshadowd.log)"
  /usr/local/bin/vmshadowd
fi
say "vmshadow job run demo --wait (the service's first backup now; then every 15 minutes)"
/usr/local/bin/vmshadow job run demo --wait
say "vmshadow status"
/usr/local/bin/vmshadow status

cat <<MSG

The demo VM $DEMO_VM and its restored copy $RESTORED_VM keep running, and vmshadowd backs
$DEMO_VM up every 15 minutes into $DEMO_REPO. Try:
  vmshadow status                  # each VM: last point, its age, next run, protection
  vmshadow task list               # what the service ran; vmshadow task log ID -f
  vmshadow job list
  export VMSHADOW_REPO=$DEMO_REPO
  vmshadow points $DEMO_VM
  vmshadow image restore $DEMO_VM@latest /tmp/demo-vda.raw --disk vda
The service's config is $DAEMON_CONFIG. Its dashboard is https://127.0.0.1:8470/ and its API
https://127.0.0.1:8470/api/v1 (the certificate is the host's own, its fingerprint is in
/var/lib/vmshadow/vmshadowd.log); sign in with a token: vmshadow token create NAME --role admin.
Remove the demo with: scripts/demo.sh --remove
MSG
