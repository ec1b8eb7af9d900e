#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# "Host B" for the replica tests: a second, independent system libvirtd on this machine, in a
# private mount namespace with fresh directories bind-mounted over /etc/libvirt, /run/libvirt,
# /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt (LAB.md, "A second host on one
# machine"). Host A stays qemu:///system; host B is
#   qemu+unix:///system?socket=$HOSTB/run/libvirt-sock
#
#   second-host.sh up       start it (idempotent: already up prints the URI and exits 0);
#                           prints the URI as the last line
#   second-host.sh down     destroy B's VMs and networks, stop B's daemons, remove $HOSTB
#                           (safe when nothing is up; only B's own processes are signalled)
#   second-host.sh status   prints "up URI" (exit 0) or "down" (exit 3)
#   second-host.sh uri      prints the URI (whether up or not)
#
# HOSTB: the host's directory, default /run/vmshadow-hostb (several instances: several
# directories). It must stay outside any repository and outside the five libvirt directories.
#
# Host B gets only host A's *.conf (so an identical qemu.conf) and nwfilter/, never A's
# domains, networks, pools or secrets: B must not be able to start A's VMs on A's disks. It
# gets its own host_uuid, and a copy of A's QEMU capability cache (up in < 1 s, not ~8 s).
#
# Networks: a lab guest has no NIC unless made with --nic; one that has it is on the libvirt
# network vmshadow-lab (lab-network.sh). A failed-over VM's domain XML comes from host A
# unchanged, so host B defines a network of the same name (VMSHADOW_LAB_NETWORK) on its own
# bridge and subnet (derived from $HOSTB: both hosts share this machine's network namespace,
# where bridge names and routes must not collide). Isolated, no DHCP, like host A's.
set -euo pipefail

B=${HOSTB:-/run/vmshadow-hostb}
B=${B%/}
[[ $B =~ ^/[^/]+/[^/]+ ]] || { echo "second-host: HOSTB must be an absolute path two levels deep" >&2; exit 2; }
URI="qemu+unix:///system?socket=$B/run/libvirt-sock"
NET_NAME=${VMSHADOW_LAB_NETWORK:-vmshadow-lab}
HASH=$(printf '%s' "$B" | sha256sum | cut -c1-6)
BRIDGE="vmshb$HASH"                              # ≤ 15 characters (IFNAMSIZ)
SUBNET="10.252.$((64 + 0x${HASH:0:2} % 128))"    # host A's lab network is 10.252.63.0/24

V() { virsh -q -c "$URI" "$@"; }

# A pid is one of host B's when its mount namespace has B's /run/libvirt bind mount: pids wrap
# within minutes here, and a pid file can outlive its process. The mount's device and root
# (mountinfo fields 3 and 4) were recorded at start-up in state/mount-signature.
is_hostb_pid() {
  local p=$1 sig
  sig=$(cat "$B/state/mount-signature" 2>/dev/null) || return 1
  [ -n "$sig" ] || return 1
  awk -v sig="$sig" '$5 == "/run/libvirt" && ($3 " " $4) == sig { found = 1 } END { exit !found }' \
    "/proc/$p/mountinfo" 2>/dev/null
}

libvirtd_alive() {
  local p
  p=$(cat "$B/state/libvirtd.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && is_hostb_pid "$p" && V uri >/dev/null 2>&1
}

ensure_network() {
  V net-info "$NET_NAME" >/dev/null 2>&1 || {
    local xml=$B/state/network.xml
    cat >"$xml" <<XML
<network>
  <name>$NET_NAME</name>
  <bridge name='$BRIDGE' stp='off' delay='0'/>
  <dns enable='no'/>
  <ip address='$SUBNET.1' netmask='255.255.255.0'/>
</network>
XML
    V net-define "$xml" >/dev/null
  }
  # As on host A (lab-network.sh): libvirtd writes a MAC list there when a NIC plugs in.
  mkdir -p "$B/lib/dnsmasq"
  V net-info "$NET_NAME" | grep -Eq 'Active: +yes' || V net-start "$NET_NAME" >/dev/null
}

up() {
  if libvirtd_alive; then
    echo "$URI"
    return 0
  fi
  # A directory without a live daemon is a leftover (a killed run): take it down first.
  [ -e "$B" ] && down >/dev/null
  mkdir -p "$B"/{etc,run,lib,cache/qemu,log,state}
  cp -a /etc/libvirt/*.conf "$B/etc/"
  cp -a /etc/libvirt/nwfilter "$B/etc/"
  echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" >>"$B/etc/libvirtd.conf"
  cp -a /var/cache/libvirt/qemu/capabilities "$B/cache/qemu/" 2>/dev/null || true
  # Default pid files (/run/libvirtd.pid, /run/virtlogd.pid) are host A's: -p into state/.
  unshare --mount --propagation private -- sh -ec "
    for m in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt
    do mount --bind '$B'/\${m%%:*} \${m#*:}; done
    virtlogd -d -p '$B/state/virtlogd.pid'
    libvirtd -d -p '$B/state/libvirtd.pid'"
  local p=
  for _ in $(seq 100); do
    p=$(cat "$B/state/libvirtd.pid" 2>/dev/null) && [ -n "$p" ] && break
    sleep 0.1
  done
  [ -n "$p" ] || { echo "second-host: libvirtd wrote no pid file" >&2; down >/dev/null; return 1; }
  awk '$5 == "/run/libvirt" { print $3 " " $4 }' "/proc/$p/mountinfo" >"$B/state/mount-signature"
  for _ in $(seq 300); do V uri >/dev/null 2>&1 && break; sleep 0.1; done
  if ! V capabilities >/dev/null; then
    echo "second-host: host B's libvirtd does not answer at $URI" >&2
    down >/dev/null
    return 1
  fi
  ensure_network
  echo "$URI"
}

stop_pid_file() {
  local f=$1 p s
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  [[ $p =~ ^[0-9]+$ ]] || return 0
  is_hostb_pid "$p" || return 0
  kill "$p" 2>/dev/null || return 0
  # PID 1 reaps late here (1-2 s): a zombie counts as exited.
  for _ in $(seq 200); do
    s=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) && [ "$s" != Z ] || return 0
    sleep 0.05
  done
  kill -9 "$p" 2>/dev/null || true
}

down() {
  [ -e "$B" ] || { echo "host B down"; return 0; }
  # rm -rf below: refuse a directory that is not one this script made.
  local e
  for e in "$B"/* "$B"/.[!.]*; do
    [ -e "$e" ] || continue
    case "${e##*/}" in etc | run | lib | cache | log | state | images) ;; *)
      echo "second-host: $B holds ${e##*/}, not made by second-host.sh: not removing it" >&2
      return 1 ;;
    esac
  done
  if [ -S "$B/run/libvirt-sock" ] && V uri >/dev/null 2>&1; then
    # QEMU outlives its libvirtd; bridges live in the shared network namespace.
    for d in $(V list --name 2>/dev/null); do V destroy "$d" >/dev/null 2>&1 || true; done
    for n in $(V net-list --name 2>/dev/null); do V net-destroy "$n" >/dev/null 2>&1 || true; done
  fi
  for f in "$B"/run/qemu/*.pid; do
    [ "${f##*/}" != driver.pid ] && stop_pid_file "$f"
  done
  stop_pid_file "$B/state/libvirtd.pid"
  stop_pid_file "$B/state/virtlogd.pid"
  # A bridge left by a libvirtd that was killed before its network was destroyed.
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" type bridge 2>/dev/null || true
  # The bind mounts vanish with the namespace's last process; nothing is mounted here.
  rm -rf "$B"
  echo "host B down"
}

status() {
  if libvirtd_alive; then
    echo "up $URI"
  else
    echo down
    return 3
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  uri) echo "$URI" ;;
  *)
    echo "usage: $0 up|down|status|uri   (HOSTB=DIR, default /run/vmshadow-hostb)" >&2
    exit 2
    ;;
esac
