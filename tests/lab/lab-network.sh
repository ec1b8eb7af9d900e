#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The lab's libvirt network: isolated (no <forward>, so no traffic leaves the host), on its
# own bridge, in a range unlikely to collide with anything real. Guests get a NIC on it
# (new-guest.sh --nic); the tests need a network that exists, not connectivity.
#   lab-network.sh ensure   define, start and autostart it (idempotent)
#   lab-network.sh remove   stop and undefine it
#   lab-network.sh status   print "active", "inactive" or "absent"
# Env: VMSHADOW_LAB_NETWORK (name, default vmshadow-lab), LIBVIRT_DEFAULT_URI
# (default qemu:///system).
set -euo pipefail

NAME=${VMSHADOW_LAB_NETWORK:-vmshadow-lab}
URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
BRIDGE=vmshlab0
ADDRESS=10.252.63.1
NETMASK=255.255.255.0

virsh_() { virsh -q -c "$URI" "$@"; }

status() {
  local info
  if ! info=$(virsh_ net-info "$NAME" 2>/dev/null); then
    echo absent
  elif [[ $info =~ Active:\ +yes ]]; then
    echo active
  else
    echo inactive
  fi
}

case "${1:-}" in
  ensure)
    # Concurrent callers (parallel tests) must not race each other's net-define.
    exec 9>/tmp/vmshadow-lab-network.lock
    flock 9
    if [ "$(status)" = absent ]; then
      xml=$(mktemp)
      trap 'rm -f "$xml"' EXIT
      cat >"$xml" <<XML
<network>
  <name>$NAME</name>
  <bridge name='$BRIDGE' stp='off' delay='0'/>
  <dns enable='no'/>
  <ip address='$ADDRESS' netmask='$NETMASK'/>
</network>
XML
      virsh_ net-define "$xml" >/dev/null
    fi
    # libvirtd writes each network's MAC list to its dnsmasq state directory when a guest's
    # NIC plugs in, even for a network like this one that runs no dnsmasq; it only creates
    # that directory when it starts a dnsmasq. Without it, on a fresh host, starting a guest
    # fails with "Failed to create file '/var/lib/libvirt/dnsmasq/<bridge>.macs.new'".
    mkdir -p /var/lib/libvirt/dnsmasq
    [ "$(status)" = active ] || virsh_ net-start "$NAME" >/dev/null
    virsh_ net-autostart "$NAME" >/dev/null
    ;;
  remove)
    [ "$(status)" = active ] && virsh_ net-destroy "$NAME" >/dev/null
    [ "$(status)" = absent ] || virsh_ net-undefine "$NAME" >/dev/null
    ;;
  status) status ;;
  *)
    echo "usage: $0 ensure|remove|status" >&2
    exit 2
    ;;
esac
