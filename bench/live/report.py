#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Turns bench/live/run.sh's results (lines "name value max_rss_kib"; sizes and JSON fields are
# in the value column) into the Markdown report for bench/RESULTS.md: medians of the rounds,
# every round's value next to it, and the goals met / not met.
import datetime
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from results import load_results  # noqa: E402

results, binary, load_before, load_after, rounds, change_mib, vnb_version, failures = sys.argv[1:9]
vals, rss = load_results(results)


def med(name):
    return statistics.median(vals[name]) if vals.get(name) else float("nan")


def mem(name):
    return f"{max(rss[name]) / 1024:.0f}" if rss.get(name) else "–"


def x(ratio):
    return "–" if math.isnan(ratio) else f"{ratio:.2f}x"


def runs(name, fmt):  # every round's value, in brackets
    return f" ({', '.join(fmt(v) for v in vals[name])})" if vals.get(name) else ""


def s(x):
    return "–" if math.isnan(x) else f"{x:.1f} s"


def mb(x):
    return "–" if math.isnan(x) else f"{x / 1e6:.0f} MB"


have_vms = bool(vals.get("vms_full"))
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
print(f"Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores "
      f"({cpu}); load average (1, 5, 15 min) before the run {load_before}, after {load_after}. "
      f"vmshadow: `{binary}`. virtnbdbackup {vnb_version}. Rounds: {rounds}, medians shown "
      f"(every round in brackets); CPU is user + sys seconds of the command and its children (medians); memory is the peak RSS (max of rounds). 1% change: "
      f"{change_mib} MiB of random bytes written in place over a file in the guest.\n")
print("| tool | full backup | repository after full | incremental (1% change) | growth | "
      "CPU full / inc | peak RSS full / inc |")
print("|---|---|---|---|---|---|---|")
rows = [("virtnbdbackup", "vnb_u"), ("virtnbdbackup --compress (lz4)", "vnb_c")]
if have_vms:
    rows.append(("vmshadow", "vms"))
for label, t in rows:
    full, inc = f"{t}_full", f"{t}_inc"
    size, growth = f"size_{t}_full", f"growth_{t}_inc"
    print(f"| {label} | {s(med(full))}{runs(full, lambda v: f'{v:.1f}')} | "
          f"{mb(med(size))}{runs(size, lambda v: f'{v / 1e6:.0f}')} | "
          f"{s(med(inc))}{runs(inc, lambda v: f'{v:.1f}')} | "
          f"{mb(med(growth))}{runs(growth, lambda v: f'{v / 1e6:.0f}')} | "
          f"{s(med(full + '_cpu'))} / {s(med(inc + '_cpu'))} | {mem(full)} / {mem(inc)} MiB |")

failed = [line.strip() for line in open(failures) if line.strip()]
if failed:
    print(f"\nvmshadow backups that failed ({len(failed)}; not in the medians):\n")
    for line in failed:
        print(f"- `{line}`")

if not have_vms:
    print("\nvmshadow: not measured" + (" (every full backup failed)." if failed else
                                        " (the binary has no `backup` command yet)."))
    sys.exit(0)

fz = vals.get("all_freeze_ms", [])
qz = vals.get("all_quiesce_ms", [])
methods = {k[len("method_"):]: int(sum(v)) for k, v in vals.items() if k.startswith("method_")}
print(f"\nvmshadow: full reads {mb(med('vms_full_bytes_read'))}, adds "
      f"{mb(med('vms_full_bytes_added'))}; incremental reads {mb(med('vms_inc_bytes_read'))}, adds "
      f"{mb(med('vms_inc_bytes_added'))} (JSON `bytes_read`/`bytes_added`, medians). Methods / "
      f"consistency of all {sum(methods.values())} backups: "
      + ", ".join(f"{k.replace('_', ' / ')} x{n}" for k, n in sorted(methods.items())) + ".")
modes = {k[len("diskmode_"):]: int(sum(v)) for k, v in vals.items() if k.startswith("diskmode_")}
if modes:
    print("\nPer-disk read modes (JSON `disks[].mode`, backup, disk, mode: count): "
          + ", ".join(f"{k}: {n}" for k, n in sorted(modes.items())) + ".")
if fz:
    call = f" Freeze call (`quiesce_ms`, guest hooks): median {statistics.median(qz):.0f} ms." if qz else ""
    print(f"\nFreeze window (`freeze_ms`, VM with 2 disks, {len(fz)} backups): median "
          f"{statistics.median(fz):.0f} ms, min {min(fz):.0f}, max {max(fz):.0f} "
          f"({', '.join(f'{v:.0f}' for v in fz)}).{call}")
fl = vals.get("floor_freeze_ms", [])
if fl:
    print(f"\nFloor (`freeze-floor.py`: bare libvirt fsFreeze → backupBegin with checkpoint and "
          f"pre-made scratch → fsThaw on the same VM, {len(fl)} samples between the rounds): "
          f"window median {statistics.median(fl):.0f} ms, min {min(fl):.0f}, max {max(fl):.0f} "
          f"({', '.join(f'{v:.0f}' for v in fl)}); freeze call median "
          f"{med('floor_quiesce_ms'):.0f} ms.")

speed_full = med("vnb_c_full") / med("vms_full")
speed_full_u = med("vnb_u_full") / med("vms_full")
speed_inc = med("vnb_c_inc") / med("vms_inc")
speed_inc_u = med("vnb_u_inc") / med("vms_inc")
smaller = med("size_vnb_c_full") / med("size_vms_full")
smaller_total = med("size_vnb_c_total") / med("size_vms_total")


def verdict(ok, ratio):
    return "not measured" if math.isnan(ratio) else "met" if ok else "**not met**"


print("\n| goal (issue 4) | result | status |")
print("|---|---|---|")
print(f"| full backup ≥ 2x faster than virtnbdbackup --compress | {s(med('vms_full'))} vs "
      f"{s(med('vnb_c_full'))} = {x(speed_full)} (vs uncompressed {x(speed_full_u)}) | "
      f"{verdict(speed_full >= 2, speed_full)} |")
print(f"| incremental after 1% change at least as fast | {s(med('vms_inc'))} vs "
      f"{s(med('vnb_c_inc'))} = {x(speed_inc)} (vs uncompressed chain {x(speed_inc_u)}) | "
      f"{verdict(speed_inc >= 1, speed_inc)} |")
print(f"| repository ≥ 1.3x smaller | after full {mb(med('size_vms_full'))} vs "
      f"{mb(med('size_vnb_c_full'))} = {x(smaller)}; after full + incremental "
      f"{mb(med('size_vms_total'))} vs {mb(med('size_vnb_c_total'))} = {x(smaller_total)} | "
      f"{verdict(smaller >= 1.3, smaller)} |")
if fz:
    print(f"| freeze window median ≤ 100 ms, 2 disks | {statistics.median(fz):.0f} ms over "
          f"{len(fz)} backups{'' if len(fz) >= 10 else ' (fewer than 10)'}"
          f"{f'; libvirt floor {statistics.median(fl):.0f} ms' if fl else ''} | {verdict(statistics.median(fz) <= 100 and len(fz) >= 10, 0.0)} |")
else:
    print("| freeze window median ≤ 100 ms, 2 disks | no `freeze_ms` reported | not measured |")
