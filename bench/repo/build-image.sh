#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the benchmark image: a 4 GiB qcow2 holding a real Debian system (debootstrap) plus
# about 1 GiB of real files (copies of /usr/share and /usr/lib content). Needs root and the
# Debian mirrors. Output: $BENCH_DIR/debian.qcow2 (kept; rebuilt only when missing).
set -euo pipefail
BENCH_DIR=${BENCH_DIR:-/var/tmp/vmshadow-bench}
IMG=$BENCH_DIR/debian.qcow2
[ -f "$IMG" ] && { echo "image exists: $IMG"; exit 0; }
mkdir -p "$BENCH_DIR"
export DEBIAN_FRONTEND=noninteractive
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
ROOT=$BENCH_DIR/rootfs
rm -rf "$ROOT"
debootstrap --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian >/dev/null
# About 1 GiB of real files on top of the system: /usr/share, then /usr/lib subtrees until
# the budget is reached.
mkdir -p "$ROOT/srv/data/lib"
cp -a /usr/share "$ROOT/srv/data/share"
budget=$((1024 * 1024 * 1024))
for src in /usr/lib/*; do
  used=$(du -sb "$ROOT/srv/data" | cut -f1)
  [ "$used" -ge "$budget" ] && break
  size=$(du -sb "$src" | cut -f1)
  [ $((used + size)) -le $((budget + 32 * 1024 * 1024)) ] || continue
  cp -a "$src" "$ROOT/srv/data/lib/" 2>/dev/null || true
done
du -sh "$ROOT/srv/data"
RAW=$BENCH_DIR/debian.raw
rm -f "$RAW"
truncate -s 4G "$RAW"
mkfs.ext4 -q -F -d "$ROOT" "$RAW"
qemu-img convert -O qcow2 "$RAW" "$IMG"
rm -f "$RAW"
rm -rf "$ROOT"
qemu-img info "$IMG"
