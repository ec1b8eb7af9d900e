#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Doc test: runs the README's repository example and its mount example as written, against a
# temporary directory, so the README cannot drift from what vmshadow does. The blocks are
# taken from README.md itself; only their absolute paths (/srv/backup/repo, /mnt/web) are
# moved under the temporary directory. The input images are made here: web.qcow2 holds an
# ext4 filesystem on the whole disk (the mount example lists it), data.raw random data.
# The VM examples (backup, restore, verify) need guests: tests/integration covers them.
#
# usage: readme-examples.sh VMSHADOW_BINARY README.md
set -euo pipefail

vmshadow=$(realpath "$1")
readme=$(realpath "$2")
work=$(mktemp -d /var/tmp/vmshadow-readme-XXXXXX)
cleanup() {
    cd /
    # A failed mount example must not leave a mount behind.
    if mountpoint -q "$work/mnt/web" 2>/dev/null; then "$vmshadow" umount "$work/mnt/web" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The lines of the ```sh block whose first line is $1, without the list's indent.
block() {
    awk -v first="$1" '
        index($0, first) && !inside { inside = 1 }
        inside && /```/ { exit }
        inside { sub(/^  /, ""); print }' "$readme"
}

repo_block=$(block 'export VMSHADOW_REPO=/srv/backup/repo')
mount_block=$(block 'mkdir -p /mnt/web')
[[ -n $repo_block && -n $mount_block ]] || { echo "README example block not found" >&2; exit 1; }

mkdir -p "$work/bin"
ln -s "$vmshadow" "$work/bin/vmshadow"
cd "$work"
truncate -s 16M web.raw
mkfs.ext4 -q -F -L web web.raw
debugfs -w -R "write $readme README.md" web.raw >/dev/null 2>&1
qemu-img convert -f raw -O qcow2 web.raw web.qcow2
head -c 8M /dev/urandom >data.raw

script="$repo_block
$mount_block"
script=${script//\/srv\/backup\/repo/$work/repo}
script=${script//\/mnt\/web/$work/mnt/web}
printf '%s\n' "--- running the README's examples:" "$script"

out=$(PATH="$work/bin:$PATH" VMSHADOW_CONFIG="$work/none.conf" bash -euo pipefail -c "$script" 2>&1) || {
    printf '%s\n' "$out"
    echo "FAIL: a README example failed" >&2
    exit 1
}
printf '%s\n' "$out"

# The examples' claims: the restore is the backed-up disk, the mount showed its files.
qemu-img compare -q web.qcow2 web-restored.qcow2 || { echo "FAIL: restored disk0 differs" >&2; exit 1; }
grep -q '^README.md$' <<<"$out" || { echo "FAIL: ls of the mount did not list README.md" >&2; exit 1; }
echo "PASS: README examples ran as written"
