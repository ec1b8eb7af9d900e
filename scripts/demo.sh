#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quickstart 1: sets up this host (packages, libvirtd), builds vmshadow, creates a small demo
# VM from the lab guest (its agent and a SQLite workload run on its own disk) and runs the
# main job on it. Idempotent: a second run reuses the host setup, the build and the demo VM.
#   scripts/demo.sh            set up and run the demo
#   scripts/demo.sh --remove   remove the demo VM and its files
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_VM=${VMSHADOW_DEMO_VM:-vmshadow-demo}
DEMO_DIR=${VMSHADOW_DEMO_DIR:-/var/lib/vmshadow/demo/$DEMO_VM}
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
say() { printf '\n== %s\n' "$*"; }

if [ "${1:-}" = "--remove" ]; then
  virsh destroy "$DEMO_VM" >/dev/null 2>&1 || true
  virsh undefine "$DEMO_VM" --checkpoints-metadata --snapshots-metadata >/dev/null 2>&1 || true
  rm -rf "$DEMO_DIR"
  echo "demo VM $DEMO_VM removed"
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
cat <<MSG

The demo VM $DEMO_VM keeps running; its repository is $DEMO_REPO. Try:
  export VMSHADOW_REPO=$DEMO_REPO
  $VMSHADOW vm list --json $DEMO_VM
  $VMSHADOW backup $DEMO_VM --json
  $VMSHADOW image restore $DEMO_VM@latest /tmp/demo-vda.raw --disk vda
Remove it with: scripts/demo.sh --remove
MSG
