#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Turns s3.sh's results (lines "name seconds max_rss_kib"; sizes in the seconds column) into
# the Markdown report of bench/RESULTS.md's "Repository on S3" section: medians of the runs.
import datetime
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from results import load_results  # noqa: E402

results, cores, binary, store, store_gb = sys.argv[1:6]
vals, rss = load_results(results)


def med(name):
    return statistics.median(vals[name]) if vals.get(name) else float("nan")


def mem(name):
    return f"{max(rss[name]) / 1024:.0f} MiB" if rss.get(name) else "–"


def secs(name):
    v = med(name)
    return "–" if math.isnan(v) else f"{v:.1f} s"


def size(name):
    v = med(name)
    return "–" if math.isnan(v) else f"{v / 1e6:.0f} MB"


def count(name):
    v = med(name)
    return "–" if math.isnan(v) else f"{v:.0f}"


def ratio(a, b):
    x, y = med(a), med(b)
    return "–" if math.isnan(x) or math.isnan(y) or y == 0 else f"{x / y:.2f}x"


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
loads = [v for k, vs in vals.items() if k.startswith("load_run") for v in vs]
print(f"Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. Machine: {cores} cores ({cpu}), "
      f"load average at the start of each run {' / '.join(f'{x:.1f}' for x in loads)}. "
      f"Binary: `{binary}`. Ceph 16.2 single node on loopback, OSD on {store} ({store_gb} GiB), "
      f"radosgw beast over http. Runs: {len(loads)}, medians shown; memory is the peak RSS.\n")
print("| tool → store | full backup | CPU (user+sys) | gateway CPU | stored | requests | peak RSS | full restore | CPU | gateway CPU | requests | peak RSS |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for label, key in (("vmshadow → local directory", "local"), ("vmshadow → RGW (S3)", "s3"),
                   ("restic 0.14 → RGW (S3)", "restic")):
    print(f"| {label} | {secs(key + '_backup')} | {secs(key + '_backup_cpu')} "
          f"| {secs(key + '_backup_gwcpu')} | {size('size_' + key)} "
          f"| {count(key + '_backup_requests')} | {mem(key + '_backup')} | {secs(key + '_restore')} "
          f"| {secs(key + '_restore_cpu')} | {secs(key + '_restore_gwcpu')} "
          f"| {count(key + '_restore_requests')} | {mem(key + '_restore')} |")
print(f"\nSpeed of vmshadow to RGW relative to the local backend (time local / time RGW; goal >= 0.8x): "
      f"backup {ratio('local_backup', 's3_backup')}, restore {ratio('local_restore', 's3_restore')}. "
      f"Against restic to the same RGW (time restic / time vmshadow; goal >= 2x): backup "
      f"{ratio('restic_backup', 's3_backup')}, restore {ratio('restic_restore', 's3_restore')}.")


def floor(key):
    c, g = med(key + "_cpu"), med(key + "_gwcpu")
    return "–" if math.isnan(c) or math.isnan(g) else f"{(c + g) / int(cores):.1f} s"


print(f"\nThe gateway shares the client's {cores} cores: a run cannot take less than (client CPU + "
      f"gateway CPU) / {cores} — vmshadow → RGW backup {floor('s3_backup')}, restore "
      f"{floor('s3_restore')}; restic backup {floor('restic_backup')}, restore "
      f"{floor('restic_restore')}.")
