#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# The floor of the freeze window on this machine: the bare libvirt sequence a pull-mode
# application-consistent backup needs, with nothing else in the window —
#   virDomainFSFreeze → virDomainBackupBegin(pull, new checkpoint on every disk, scratch
#   images created beforehand: REUSE_EXTERNAL) → virDomainFSThaw
# timed from the freeze returning to the thaw returning (issue 4's definition), then the job
# is aborted and the checkpoint deleted. Prints one "floor_freeze_ms N 0" and
# "floor_quiesce_ms N 0" line per sample (run.sh's results format).
#   freeze-floor.py VM WORKDIR SAMPLES
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import libvirt

vm, work, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = libvirt.open(os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system"))
dom = conn.lookupByName(vm)
disks = [(d.find("target").get("dev"), d.find("source").get("file"))
         for d in ET.fromstring(dom.XMLDesc(0)).findall("devices/disk[@device='disk']")]
for i in range(samples):
    scratch = {}
    for target, source in disks:
        scratch[target] = f"{work}/floor-{target}.qcow2"
        size = dom.blockInfo(source)[0]
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", scratch[target], str(size)],
                       check=True)
    backup = (f"<domainbackup mode='pull'><server transport='unix' socket='{work}/floor.sock'/>"
              "<disks>" + "".join(f"<disk name='{t}' backup='yes' type='file'><scratch file='"
                                  f"{scratch[t]}'/></disk>" for t, _ in disks) +
              "</disks></domainbackup>")
    checkpoint = (f"<domaincheckpoint><name>bench-floor-{os.getpid()}-{i}</name><disks>" +
                  "".join(f"<disk name='{t}' checkpoint='bitmap'/>" for t, _ in disks) +
                  "</disks></domaincheckpoint>")
    t0 = time.monotonic()
    dom.fsFreeze()
    t1 = time.monotonic()
    try:
        dom.backupBegin(backup, checkpoint, libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)
    finally:
        dom.fsThaw()
    t2 = time.monotonic()
    print(f"floor_freeze_ms {1000 * (t2 - t1):.0f} 0")
    print(f"floor_quiesce_ms {1000 * (t1 - t0):.0f} 0")
    dom.abortJob()
    while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
        time.sleep(0.05)
    for cp in dom.listAllCheckpoints():
        if cp.getName().startswith(f"bench-floor-{os.getpid()}-"):
            cp.delete()
    for path in scratch.values():
        if os.path.exists(path):
            os.remove(path)
    time.sleep(0.3)
