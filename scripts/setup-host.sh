#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Prepares a Debian 12 host for vmshadow: installs every package the build, the lab and
# the tests need, and makes sure virtlogd and libvirtd answer. Idempotent: safe to run
# again on a host that already has all of it. Run as root.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "setup: run as root (it installs packages and starts libvirtd)" >&2; exit 1; }

PACKAGES=(
  # build
  build-essential cmake pkg-config clang-format
  libvirt-dev libnbd-dev libzstd-dev libssl-dev libsqlite3-dev
  nlohmann-json3-dev libcli11-dev libpugixml-dev libgtest-dev libgmock-dev nbdkit-plugin-dev
  # vmshadowd: HTTP/TLS over TCP and a unix socket (Boost.Beast), its config (toml11),
  # sd_notify (libsystemd)
  libboost-dev libtoml11-dev libsystemd-dev
  # daemon tests: systemd-analyze (calendar golden table), promtool (metrics format)
  systemd prometheus
  # hypervisor and tools vmshadow drives
  qemu-system-x86 qemu-utils qemu-guest-agent
  libvirt-daemon-system libvirt-clients libnbd-bin nbdkit fuse3
  # vmshadow mount: partition tables (sfdisk), loop devices and mount (util-linux, mount)
  fdisk util-linux mount
  # libvirtd 9.0's network driver segfaults at start-up when a network is still active
  # (e.g. after the daemon was killed) and dnsmasq is missing: a recommends we need.
  dnsmasq-base
  # lab guest recipe
  busybox-static cpio e2fsprogs dosfstools sqlite3 kmod
  # the web dashboard's end-to-end tests drive Debian's headless browser
  chromium
  # the S3 tests and bench (issue 17): a single-node Ceph cluster with its RADOS Gateway
  # (tests/lab/ceph-rgw.sh) and restic to compare with. Installing them moves curl/libcurl to
  # the current point release, so the libcurl headers come in the same apt step (LAB.md).
  ceph-mon ceph-osd radosgw ceph-common restic libcurl4-openssl-dev
)
# The web dashboard is built with node and npm: Debian's (node 18) only when there is no node
# at all, because a node installed otherwise (e.g. NodeSource's 20) conflicts with those packages.
command -v node >/dev/null || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirt on a host without systemd: the package does not start the daemons and its
# defaults (cgroups, security drivers, the qemu user) do not work in this container.
QEMU_CONF=/etc/libvirt/qemu.conf
if ! grep -q '^# vmshadow lab settings' "$QEMU_CONF"; then
  log "configuring $QEMU_CONF for a host without systemd"
  cat >>"$QEMU_CONF" <<'CONF'
# vmshadow lab settings
security_driver = "none"
user = "root"
group = "root"
cgroup_controllers = [ ]
CONF
fi

if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    log "starting libvirtd through systemd"
    systemctl start virtlogd libvirtd
  else
    log "starting virtlogd and libvirtd (no init system runs them)"
    # By pid file, not by name: a second host's daemons (tests/lab/second-host.sh) are also
    # called libvirtd and virtlogd, but keep their pid files elsewhere.
    running() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
    running /run/virtlogd.pid || virtlogd -d
    running /run/libvirtd.pid || libvirtd -d
  fi
  for _ in $(seq 1 150); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "setup: libvirtd did not come up; the end of /var/log/libvirt/libvirtd.log:" >&2
    tail -n 5 /var/log/libvirt/libvirtd.log >&2 || true
    exit 1
  fi
fi
# libvirtd writes a network's MAC list there when a guest's NIC plugs in, but creates the
# directory only when it starts a dnsmasq: networks without DHCP would fail on a fresh host.
mkdir -p /var/lib/libvirt/dnsmasq
log "host ready"
