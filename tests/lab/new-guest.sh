#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The one definition of a lab guest, used by the C++ fixture (tests/lab/lab_guest.h) and by
# hand (the README demo). Creates DIR with the guest's files and prints its libvirt domain
# XML on stdout (also written to DIR/domain.xml):
#   DIR/vmlinuz, DIR/initrd.img  private copies, so a restore test can't touch the cache
#   DIR/root.qcow2 | DIR/root.raw  full copy of the lab's root disk (vda)
#   DIR/data-vdb.qcow2, ...      data disks in --data-disk order (vdb, vdc, ...)
#   DIR/serial.log               the serial console (kernel and "lab:" lines of /sbin/init)
#
# usage: new-guest.sh --name NAME --dir DIR [options]
#   --agent on|off|hang     qemu-ga in the guest (default on); hang: started, then SIGSTOPped
#   --no-agent-channel      no org.qemu.guest_agent.0 channel in the domain
#   --workload              run the SQLite workload (/var/lib/lab/db.sqlite)
#   --data-disk TYPE:SIZE   TYPE ext4 | vfat | blank, SIZE as qemu-img takes it (64M); repeatable
#   --root-format qcow2|raw (default qcow2)
#   --nic                   a virtio NIC on the lab network (lab-network.sh ensure is run)
#   --ip ADDR/PREFIX        static address of that NIC in the guest (e.g. 10.252.63.10/24)
#   --memory MIB            (default 256)
#   --lab DIR               the built guest (default $VMSHADOW_LAB_DIR, else build-guest.sh)
#   --define                also define the domain (virsh -c ${LIBVIRT_DEFAULT_URI:-qemu:///system})
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { printf 'new-guest: %s\n' "$*" >&2; exit 2; }

NAME= DIR= AGENT=on CHANNEL=1 WORKLOAD=off ROOT_FORMAT=qcow2 NIC=0 IP= MEMORY=256 DEFINE=0
LAB=${VMSHADOW_LAB_DIR:-}
DATA_DISKS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=${2:?}; shift ;;
    --dir) DIR=${2:?}; shift ;;
    --agent) AGENT=${2:?}; shift ;;
    --no-agent-channel) CHANNEL=0 ;;
    --workload) WORKLOAD=on ;;
    --data-disk) DATA_DISKS+=("${2:?}"); shift ;;
    --root-format) ROOT_FORMAT=${2:?}; shift ;;
    --nic) NIC=1 ;;
    --ip) IP=${2:?}; shift ;;
    --memory) MEMORY=${2:?}; shift ;;
    --lab) LAB=${2:?}; shift ;;
    --define) DEFINE=1 ;;
    -h | --help) sed -n '3,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (--help lists them)" ;;
  esac
  shift
done

[ -n "$NAME" ] || die "--name is required"
[ -n "$DIR" ] || die "--dir is required"
# Names and paths go into XML and a kernel command line unescaped: keep them plain.
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "name '$NAME': use letters, digits, _ . -"
[[ $DIR =~ ^[A-Za-z0-9_./+-]+$ ]] || die "dir '$DIR': use letters, digits, _ . / + -"
case "$AGENT" in on | off | hang) ;; *) die "--agent on|off|hang" ;; esac
case "$ROOT_FORMAT" in qcow2 | raw) ;; *) die "--root-format qcow2|raw" ;; esac
[[ $MEMORY =~ ^[0-9]+$ ]] || die "--memory takes MiB"
[ -z "$IP" ] || [[ $IP =~ ^[0-9.]+/[0-9]+$ ]] || die "--ip takes ADDR/PREFIX"
[ "${#DATA_DISKS[@]}" -le 25 ] || die "at most 25 data disks (vdb..vdz)"
for spec in "${DATA_DISKS[@]}"; do
  [[ $spec =~ ^(ext4|vfat|blank):[0-9]+[KMGT]?$ ]] || die "--data-disk '$spec': TYPE:SIZE, TYPE ext4|vfat|blank"
done

if [ -z "$LAB" ]; then
  LAB=$("$HERE/build-guest.sh" | tail -n1)
fi
for f in vmlinuz initrd.img root.qcow2; do
  [ -s "$LAB/$f" ] || die "$LAB/$f missing (is --lab/VMSHADOW_LAB_DIR the output of build-guest.sh?)"
done

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty"

cp "$LAB/vmlinuz" "$LAB/initrd.img" "$DIR/"
if [ "$ROOT_FORMAT" = qcow2 ]; then
  cp --sparse=always "$LAB/root.qcow2" "$DIR/root.qcow2"
else
  qemu-img convert -q -f qcow2 -O raw "$LAB/root.qcow2" "$DIR/root.raw"
fi
: >"$DIR/serial.log"

disk_xml() { # file format target
  cat <<XML
    <disk type='file' device='disk'>
      <driver name='qemu' type='$2'/>
      <source file='$1'/>
      <target dev='$3' bus='virtio'/>
    </disk>
XML
}

disks=$(disk_xml "$DIR/root.$ROOT_FORMAT" "$ROOT_FORMAT" vda)
letters=(b c d e f g h i j k l m n o p q r s t u v w x y z)
i=0
for spec in "${DATA_DISKS[@]}"; do
  type=${spec%%:*} size=${spec#*:} target=vd${letters[$i]}
  file=$DIR/data-$target.qcow2
  if [ "$type" = blank ]; then
    qemu-img create -q -f qcow2 "$file" "$size"
  else
    raw=$DIR/data-$target.raw
    truncate -s "$size" "$raw"
    case "$type" in
      ext4) mke2fs -q -F -t ext4 -L "lab-$target" "$raw" >&2 ;;
      vfat) mkfs.vfat -n "LAB-${target^^}" "$raw" >/dev/null ;;
    esac
    qemu-img convert -q -f raw -O qcow2 "$raw" "$file"
    rm -f "$raw"
  fi
  disks+=$'\n'$(disk_xml "$file" qcow2 "$target")
  i=$((i + 1))
done

cmdline="console=ttyS0 loglevel=4 panic=-1 lab.name=$NAME lab.agent=$AGENT lab.workload=$WORKLOAD"
[ -n "$IP" ] && cmdline+=" lab.ip=$IP"

channel=
[ "$CHANNEL" = 1 ] && channel="
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>"
nic=
if [ "$NIC" = 1 ]; then
  "$HERE/lab-network.sh" ensure
  nic="
    <interface type='network'>
      <source network='${VMSHADOW_LAB_NETWORK:-vmshadow-lab}'/>
      <model type='virtio'/>
    </interface>"
fi

# TCG (type='qemu': KVM does not work on these hosts), direct kernel boot, no graphics.
# A kernel panic reboots (panic=-1) and a reboot ends the domain, so a broken guest stops
# quickly instead of hanging a test until its timeout.
cat >"$DIR/domain.xml" <<XML
<domain type='qemu'>
  <name>$NAME</name>
  <description>vmshadow lab guest (tests/lab/new-guest.sh); files in $DIR</description>
  <memory unit='MiB'>$MEMORY</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$DIR/vmlinuz</kernel>
    <initrd>$DIR/initrd.img</initrd>
    <cmdline>$cmdline</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
$disks
    <serial type='file'>
      <source path='$DIR/serial.log'/>
      <target port='0'/>
    </serial>$channel$nic
    <memballoon model='none'/>
  </devices>
</domain>
XML

if [ "$DEFINE" = 1 ]; then
  virsh -q -c "${LIBVIRT_DEFAULT_URI:-qemu:///system}" define "$DIR/domain.xml" >&2
fi
cat "$DIR/domain.xml"
