#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the lab's test guest and prints the directory that holds it (last line of stdout):
#   vmlinuz     Debian's cloud kernel (linux-image-cloud-amd64's current dependency)
#   initrd.img  busybox + virtio modules only: mounts /dev/vda and switch_roots into it
#   root.qcow2  the guest's own disk (ext4, 256 MiB virtual): busybox, /sbin/init,
#               qemu-ga + fsfreeze hook, sqlite3 + workload, vfat/nls modules
#   recipe.txt  what went into it
# Cached under ${VMSHADOW_LAB_CACHE:-$HOME/.cache/vmshadow-lab}/<hash>/, where <hash> covers
# this script, tests/lab/guest/*, every host file copied into the guest (binaries and the
# libraries ldd lists) and the kernel package version. A complete cache is reused without
# doing anything else, so a fresh clone on the same machine reuses it. The build happens in
# a temporary directory renamed into place, so a killed build never leaves a half cache.
# Needs root (apt-get download), busybox-static, qemu-guest-agent, sqlite3, e2fsprogs,
# qemu-utils, cpio (scripts/setup-host.sh installs them).
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_SRC=$HERE/guest
CACHE=${VMSHADOW_LAB_CACHE:-$HOME/.cache/vmshadow-lab}
ROOT_SIZE=256M
# Host programs that run inside the guest; their libraries come from ldd.
GUEST_PROGRAMS=(/usr/sbin/qemu-ga /usr/bin/sqlite3)
INITRD_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  virtio_blk virtio_console failover net_failover virtio_net)
# Filesystems the cloud kernel builds as modules; vfat (default codepage 437, iocharset ascii)
# is the lab's "filesystem that cannot be frozen". button + evdev let busybox acpid see the
# ACPI power button (libvirt's shutdown without an agent).
ROOT_MODULES=(fat vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859-1 button evdev)

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in busybox qemu-img mke2fs debugfs cpio apt-cache apt-get dpkg-deb sha256sum ldd; do
  command -v "$tool" >/dev/null || die "missing $tool (run scripts/setup-host.sh)"
done
BUSYBOX=$(command -v busybox)
# The initrd has no libraries: its busybox must be the static one.
ldd "$BUSYBOX" >/dev/null 2>&1 && die "$BUSYBOX is not static (install busybox-static)"
for p in "${GUEST_PROGRAMS[@]}"; do [ -x "$p" ] || die "missing $p (run scripts/setup-host.sh)"; done

# The meta package pins its kernel: "Depends: linux-image-6.1.0-NN-cloud-amd64 (= VERSION)".
read -r kernel_pkg kernel_ver < <(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
  sed -n 's/^Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\) (= \([^)]*\)).*/\1 \2/p' | head -n1) ||
  die "cannot resolve linux-image-cloud-amd64's kernel (apt-get update?)"

host_files() {
  local p
  printf '%s\n' "$BUSYBOX"
  for p in "${GUEST_PROGRAMS[@]}"; do
    printf '%s\n' "$p"
    ldd "$p" | awk '/=>/ { print $3 } /^\t\// { print $1 }'
  done | sort -u
}
mapfile -t HOST_FILES < <(host_files)

hash=$(
  {
    echo "kernel $kernel_pkg $kernel_ver"
    sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
    (cd "$GUEST_SRC" && find . -type f | sort | xargs sha256sum)
    for f in "${HOST_FILES[@]}"; do printf '%s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; done
  } | sha256sum | cut -c1-16
)
OUT=$CACHE/$hash
OUTPUTS=(vmlinuz initrd.img root.qcow2 recipe.txt)

complete() {
  local f
  for f in "${OUTPUTS[@]}"; do [ -s "$OUT/$f" ] || return 1; done
}
if complete; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$CACHE"
# One builder per recipe; a second caller waits and then finds the cache complete.
exec 9>"$CACHE/.lock-$hash"
flock 9
if complete; then
  echo "$OUT"
  exit 0
fi
# Under the lock nobody else builds this recipe: anything left is from a killed build.
rm -rf "$OUT" "$CACHE/.build-$hash".*

TMP=$(mktemp -d "$CACHE/.build-$hash.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
log "building $kernel_pkg guest into $OUT"

# --- kernel -------------------------------------------------------------------------------
(cd "$TMP" && apt-get download "$kernel_pkg=$kernel_ver" >/dev/null 2>"$TMP/apt.log") ||
  { cat "$TMP/apt.log" >&2; die "apt-get download $kernel_pkg failed"; }
dpkg-deb -x "$TMP"/"$kernel_pkg"_*.deb "$TMP/kernel"
kver=${kernel_pkg#linux-image-}
KMOD=$TMP/kernel/lib/modules/$kver
cp "$TMP/kernel/boot/vmlinuz-$kver" "$TMP/vmlinuz"

# Copies module $1 (by name) uncompressed to $2/$1.ko.
copy_module() {
  local path
  path=$(find "$KMOD/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" | head -n1)
  [ -n "$path" ] || die "module $1 not in $kernel_pkg"
  case "$path" in
    *.xz) xz -dc "$path" >"$2/$1.ko" ;;
    *.zst) zstd -qdc "$path" >"$2/$1.ko" ;;
    *) cp "$path" "$2/$1.ko" ;;
  esac
}

# --- initramfs ----------------------------------------------------------------------------
INITRD=$TMP/initrd
mkdir -p "$INITRD/bin" "$INITRD/lib/modules"
cp "$BUSYBOX" "$INITRD/bin/busybox"
cp "$GUEST_SRC/initrd-init" "$INITRD/init"
for m in "${INITRD_MODULES[@]}"; do copy_module "$m" "$INITRD/lib/modules"; done

# --- root disk ----------------------------------------------------------------------------
ROOT=$TMP/root
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,run,tmp,root,data,etc/qemu,var/log,var/lib/lab,usr/lib/lab}
mkdir -p "$ROOT/lib/modules/lab"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list-full); do
  [ -e "$ROOT/$applet" ] || { mkdir -p "$ROOT/$(dirname "$applet")" && ln -s /bin/busybox "$ROOT/$applet"; }
done
rm -f "$ROOT/sbin/init" "$ROOT/sbin/shutdown"
install -m 0755 "$GUEST_SRC/init" "$ROOT/sbin/init"
install -m 0755 "$GUEST_SRC/shutdown" "$ROOT/sbin/shutdown"
install -m 0755 "$GUEST_SRC/fsfreeze-hook" "$ROOT/etc/qemu/fsfreeze-hook"
install -m 0755 "$GUEST_SRC/workload" "$ROOT/usr/lib/lab/workload"
mkdir -p "$ROOT/etc/acpi"
install -m 0755 "$GUEST_SRC/shutdown" "$ROOT/etc/acpi/power"
printf 'PWRF power\n' >"$ROOT/etc/acpid.conf"
for f in "${HOST_FILES[@]}"; do
  [ "$f" = "$BUSYBOX" ] && continue
  mkdir -p "$ROOT/$(dirname "$f")"
  cp -L "$f" "$ROOT/$f"
done
for m in "${ROOT_MODULES[@]}"; do copy_module "$m" "$ROOT/lib/modules/lab"; done
ln -s /run "$ROOT/var/run"
chmod 1777 "$ROOT/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
printf 'lab-guest\n' >"$ROOT/etc/hostname"

# Fixed timestamps and ids: the same recipe gives the same images.
find "$INITRD" "$ROOT" -exec touch -h -d @0 {} +
(cd "$INITRD" && find . -print0 | sort -z | cpio --null --create --format=newc --reproducible \
  --owner=0:0 --quiet | gzip -9n >"$TMP/initrd.img")
truncate -s "$ROOT_SIZE" "$TMP/root.raw"
E2FSPROGS_FAKE_TIME=1 mke2fs -q -t ext4 -b 4096 -L lab-root -U 6c616272-6f6f-4000-8000-766d73686477 \
  -E root_owner=0:0,hash_seed=6c616272-6f6f-4000-8000-766d73686477 -d "$ROOT" \
  "$TMP/root.raw" >&2
# mke2fs -d copies each inode's ctime from the staging tree, which touch cannot set.
{
  echo "sif / ctime @0"
  (cd "$ROOT" && find . -mindepth 1 | sed 's|^\.\(.*\)$|sif \1 ctime @0|')
} >"$TMP/ctime.cmds"
E2FSPROGS_FAKE_TIME=1 debugfs -w -f "$TMP/ctime.cmds" "$TMP/root.raw" >/dev/null 2>"$TMP/debugfs.log" ||
  { cat "$TMP/debugfs.log" >&2; die "debugfs failed"; }
qemu-img convert -q -f raw -O qcow2 "$TMP/root.raw" "$TMP/root.qcow2"

{
  echo "hash $hash"
  echo "kernel $kernel_pkg $kernel_ver"
  echo "initrd modules ${INITRD_MODULES[*]}"
  echo "root modules ${ROOT_MODULES[*]}"
  for f in "${HOST_FILES[@]}"; do echo "host file $f"; done
} >"$TMP/recipe.txt"

mkdir "$TMP/out"
mv "$TMP/vmlinuz" "$TMP/initrd.img" "$TMP/root.qcow2" "$TMP/recipe.txt" "$TMP/out/"
mv -T "$TMP/out" "$OUT"
log "done: $(du -sh "$OUT" | cut -f1)"
echo "$OUT"
