#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Turns run.sh's results (lines "name seconds max_rss_kib"; sizes are in the seconds column)
# into the Markdown report of bench/RESULTS.md: medians of the runs.
import datetime
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from results import load_results  # noqa: E402

results, cores, binary = sys.argv[1], sys.argv[2], sys.argv[3]
vals, rss = load_results(results)


def med(name):
    return statistics.median(vals[name]) if vals.get(name) else float("nan")


def mem(name):
    return max(rss[name]) / 1024 if rss.get(name) else float("nan")


def mb(x):
    return f"{x / 1e6:.0f} MB"


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
load = os.getloadavg()
run_loads = [v for k, vs in vals.items() if k.startswith("load_run") for v in vs]
run_load = f", at the start of each run {' / '.join(f'{x:.1f}' for x in run_loads)}" if run_loads else ""
print(f"Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. Machine: {cores} cores ({cpu}), "
      f"load average during the report {load[0]:.1f}{run_load}. Binary: `{binary}`. "
      f"Runs: {len(vals['vmshadow_full'])}, medians shown; memory is the peak RSS (max of runs).\n")
print("| tool | full backup | repo after full | incremental (1% scattered) | growth | restore | peak RSS backup |")
print("|---|---|---|---|---|---|---|")
rows = [("vmshadow (zstd 2)", "vmshadow_full", "v", "vmshadow_incr", "vmshadow_restore_qcow2"),
        ("vmshadow encrypted", "vmshadow_enc_full", "ve", "vmshadow_enc_incr", None),
        ("restic 0.14", "restic_full", "r", "restic_incr", "restic_restore"),
        ("borg 1.2 lz4", "borg_lz4_full", "b1", "borg_lz4_incr", "borg_lz4_restore"),
        ("borg 1.2 zstd,3", "borg_zstd3_full", "b3", "borg_zstd3_incr", None)]
for label, full, repo, incr, restore in rows:
    r = f"{med(restore):.1f} s" if restore else "–"
    print(f"| {label} | {med(full):.1f} s | {mb(med('size_full_' + repo))} | {med(incr):.1f} s | "
          f"{mb(med('growth_incr_' + repo))} | {r} | {mem(full):.0f} MiB |")
print(f"\nvmshadow raw restore: {med('vmshadow_restore_raw'):.1f} s "
      f"(peak {mem('vmshadow_restore_raw'):.0f} MiB); qcow2 restore peak "
      f"{mem('vmshadow_restore_qcow2'):.0f} MiB; incremental peak {mem('vmshadow_incr'):.0f} MiB.")
cb = med("changed_blocks")
cbc = med("changed_blocks_compressed")
g = med("growth_incr_v")
print(f"\n1% change: {cb:.0f} distinct 64 KiB blocks changed; their compressed size "
      f"(zstd 2, stored alone) {mb(cbc)}; vmshadow grew by {mb(g)} = {g / cbc:.2f}x "
      f"(goal <= 1.5x); restic grew by {mb(med('growth_incr_r'))}.")
print(f"\nFull-backup speed-up vs restic {med('restic_full') / med('vmshadow_full'):.1f}x, "
      f"vs borg lz4 {med('borg_lz4_full') / med('vmshadow_full'):.1f}x; incremental vs restic "
      f"{med('restic_incr') / med('vmshadow_incr'):.1f}x; repository size vs restic "
      f"{med('size_full_v') / med('size_full_r'):.3f}x (goal <= 1.10x).")
peers_full = min(med("restic_full"), med("borg_lz4_full"), med("borg_zstd3_full"))
print(f"\nCPU time (user + system, qemu-nbd included; medians): vmshadow full "
      f"{med('vmshadow_full_cpu'):.1f} s, incremental {med('vmshadow_incr_cpu'):.1f} s; restic full "
      f"{med('restic_full_cpu'):.1f} s, incremental {med('restic_incr_cpu'):.1f} s; borg lz4 full "
      f"{med('borg_lz4_full_cpu'):.1f} s. Against the best peer the full backup is "
      f"{peers_full / med('vmshadow_full'):.2f}x faster (3x needs <= {peers_full / 3:.2f} s); the "
      f"incremental {med('restic_incr') / med('vmshadow_incr'):.2f}x restic's (3x needs <= "
      f"{med('restic_incr') / 3:.2f} s).")
print("\nScale checks:\n")
print(f"- unchanged, fully allocated 2 GiB image, second point: {med('unchanged_added'):.0f} bytes "
      f"added (goal < 1 MiB), {med('unchanged_full_alloc'):.1f} s, peak {mem('unchanged_full_alloc'):.0f} MiB")
print(f"- 1 TiB sparse qcow2 (16 MiB of data): backup {med('tib_sparse_full'):.1f} s, peak "
      f"{mem('tib_sparse_full'):.0f} MiB; restore to qcow2 {med('tib_sparse_restore'):.1f} s, peak "
      f"{mem('tib_sparse_restore'):.0f} MiB")
print(f"- repository of {med('many_points_count2'):.0f} points (plus the others): one more backup "
      f"{med('many_points_backup'):.1f} s / {mem('many_points_backup'):.0f} MiB, `points --json` "
      f"{med('many_points_list'):.1f} s / {mem('many_points_list'):.0f} MiB, `repo check` "
      f"{med('many_points_check'):.1f} s / {mem('many_points_check'):.0f} MiB")
