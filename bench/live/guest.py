#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Talks to a lab guest's agent for the live benchmark (python3-libvirt, a dependency of
# virtnbdbackup). Connection: $LIBVIRT_DEFAULT_URI (default qemu:///system).
#   guest.py wait-agent VM TIMEOUT_S     polls guest-ping until it answers
#   guest.py exec VM TIMEOUT_S CMD       guest-exec of /bin/sh -c CMD; prints its stdout,
#                                        exits with its exit code (stderr goes to stderr)
import base64
import json
import os
import sys
import time

import libvirt
import libvirt_qemu


def agent(dom, cmd, timeout=10):
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), timeout, 0))["return"]


def main():
    what, vm, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    libvirt.registerErrorHandler(lambda *_: None, None)  # errors are raised, not printed
    conn = libvirt.open(os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system"))
    dom = conn.lookupByName(vm)
    deadline = time.monotonic() + timeout
    if what == "wait-agent":
        while True:
            try:
                agent(dom, {"execute": "guest-ping"}, 2)
                return 0
            except libvirt.libvirtError as e:
                if not dom.isActive() or time.monotonic() > deadline:
                    print(f"guest.py: agent of {vm} did not answer: {e}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
    if what == "exec":
        pid = agent(dom, {"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", sys.argv[4]], "capture-output": True}})["pid"]
        while True:
            st = agent(dom, {"execute": "guest-exec-status", "arguments": {"pid": pid}})
            if st.get("exited"):
                sys.stdout.write(base64.b64decode(st.get("out-data", "")).decode(errors="replace"))
                sys.stderr.write(base64.b64decode(st.get("err-data", "")).decode(errors="replace"))
                return st.get("exitcode", 1)
            if time.monotonic() > deadline:
                print(f"guest.py: '{sys.argv[4]}' still running after {timeout} s", file=sys.stderr)
                return 1
            time.sleep(0.1)
    print(f"guest.py: unknown command {what}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
