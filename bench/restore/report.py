#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Turns bench/restore/run.sh's results (lines "name value max_rss_kib"; sizes and loads are in
# the value column) into the Markdown report for bench/RESULTS.md: medians of the rounds, every
# round's value next to it, the ratios the issue asks for and its goals met / not met.
import datetime
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from results import load_results  # noqa: E402

results, binary, load_before, load_after, runs_n, vnb_v, restic_v, borg_v, qemu_v = sys.argv[1:10]
vals, rss = load_results(results)


def med(name):
    v = [x for x in vals.get(name, []) if not math.isnan(x)]
    return statistics.median(v) if v else float("nan")


def every(name, fmt=lambda v: f"{v:.1f}"):
    return f" ({', '.join(fmt(v) for v in vals[name])})" if vals.get(name) else ""


def s(x):
    return "–" if math.isnan(x) else f"{x:.1f} s"


def s2(x):
    return "–" if math.isnan(x) else f"{x:.2f} s"


def mb(x):
    return "–" if math.isnan(x) else f"{x / 1e6:.0f} MB"


def ratio(a, b):
    return "–" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
loads = ", ".join(f"{v:.1f}" for r in range(1, int(runs_n) + 1) for v in vals.get(f"load_round{r}", []))
print(f"Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores "
      f"({cpu}); load average (1, 5, 15 min) before the run {load_before}, after {load_after}; "
      f"1-minute load at the start of each round: {loads}. vmshadow: `{binary}`. "
      f"virtnbdbackup {vnb_v}, restic {restic_v}, borg {borg_v}, qemu-img {qemu_v}. Rounds: {runs_n}, "
      f"the tools' order rotating; medians shown (every round in brackets). CPU is user + sys "
      f"seconds of the command and the children it waits for (medians); memory is the peak RSS of "
      f"the largest of those processes (max of rounds). \"sync after\" is a `sync` run right after "
      f"the command: the part of its output it left dirty in the page cache.\n")
print(f"Source: {mb(med('source_bytes'))} qcow2 file, {mb(med('data_bytes'))} of allocated data in "
      f"4 GiB. Stored: vmshadow {mb(med('size_vms'))}, virtnbdbackup {mb(med('size_vnb-u'))} "
      f"(`--compress` {mb(med('size_vnb-c'))}), restic {mb(med('size_restic'))}, borg lz4 "
      f"{mb(med('size_borg'))}.\n")
print(f"The disk's durable write rate (1 GiB of `dd conv=fdatasync`), before and after the restores: "
      f"{mb(med('disk_rate_before'))}/s and {mb(med('disk_rate_after'))}/s: writing the "
      f"{mb(med('data_bytes'))} of data durably at that rate would take "
      f"{s(med('data_bytes') / max([r for r in (med('disk_rate_before'), med('disk_rate_after')) if not math.isnan(r)] or [math.nan]))}"
      f" (the faster rate; the disk absorbs bursts, so this is no bound).\n")
print("| tool | restore | sync after | until durable | CPU | peak RSS | output allocated |")
print("|---|---|---|---|---|---|---|")
rows = [
    ("vmshadow `image restore --format qcow2`", "vms_qcow2"),
    ("vmshadow `image restore` (sparse raw)", "vms_raw"),
    ("virtnbdrestore (uncompressed backup)", "vnb_u"),
    ("virtnbdrestore (`--compress` backup)", "vnb_c"),
    ("borg extract (lz4)", "borg"),
    ("restic restore", "restic"),
    ("`qemu-img convert -O qcow2` of the source (no repository)", "convert"),
]
durable = {}
for label, t in rows:
    if not vals.get(t):
        continue
    durable[t] = statistics.median(a + b for a, b in zip(vals[t], vals[t + "_sync"]))
    peak = f"{max(rss[t]) / 1024:.0f} MiB"
    print(f"| {label} | {s2(med(t))}{every(t, lambda v: f'{v:.2f}')} | {s2(med(t + '_sync'))} | "
          f"{s2(durable[t])} | {s(med(t + '_cpu'))} | {peak} | {mb(med('outsize_' + t))} |")

vq, vr, vnb, vnbc, conv = (med(t) for t in ("vms_qcow2", "vms_raw", "vnb_u", "vnb_c", "convert"))
best_vnb = min(vnb, vnbc) if not (math.isnan(vnb) or math.isnan(vnbc)) else vnb
print()
print(f"Ratios (medians): virtnbdrestore / vmshadow qcow2 = {ratio(vnb, vq)} (from the `--compress` "
      f"backup {ratio(vnbc, vq)}); virtnbdrestore / vmshadow raw = {ratio(vnb, vr)} "
      f"({ratio(vnbc, vr)}); vmshadow qcow2 / `qemu-img convert` = {ratio(vq, conv)}, raw / convert "
      f"= {ratio(vr, conv)}; until durable: vmshadow qcow2 / convert + sync = "
      f"{ratio(durable.get('vms_qcow2', math.nan), durable.get('convert', math.nan))}. "
      f"borg / vmshadow qcow2 = {ratio(med('borg'), vq)}, restic / vmshadow qcow2 = "
      f"{ratio(med('restic'), vq)}.")

rates = [r for r in (med("disk_rate_before"), med("disk_rate_after")) if not math.isnan(r)]
disk_s = med("data_bytes") / max(rates) if rates else math.nan
cores = os.cpu_count() or 1
for label, t in (("qcow2", "vms_qcow2"), ("raw", "vms_raw")):
    cpu_s = med(t + "_cpu") / cores
    print(f"\nvmshadow {label}: its CPU over {cores} cores is {s2(cpu_s)} (the floor if both cores were "
          f"its own); the median {s2(med(t))} is {ratio(med(t), cpu_s)} of that. The data over the "
          f"dd rate would be {s2(disk_s)}"
          + (" — not a bound: the restore made it durable faster than dd did."
             if med(t) < disk_s else "."), end="")
print()

if vals.get("ir_agent"):
    print()
    print(f"Instant recovery of a lab guest (TCG, 1 vCPU, 256 MiB RAM, one 256 MiB qcow2 disk), "
          f"`vmshadow restore POINT --instant --as NAME --to DIR`: the guest agent answered "
          f"guest-ping **{s(med('ir_agent'))}**{every('ir_agent')} after the command started; "
          f"the VM was running from the repository after {s(med('ir_running'))}"
          f"{every('ir_running')}; the command ended (disks copied, pivoted, VM defined) after "
          f"{s(med('ir_total'))}{every('ir_total')}, peak RSS {max(rss['ir_total']) / 1024:.0f} MiB.")

print()
print("| goal (issue 5) | result | status |")
print("|---|---|---|")
best = min(vq, vr)
ok = not math.isnan(best_vnb) and vq * 3 <= best_vnb
print(f"| full restore ≥ 3x faster than virtnbdrestore, every chunk verified | qcow2 {s2(vq)}, raw "
      f"{s2(vr)} vs virtnbdrestore {s2(vnb)} / {s2(vnbc)} (`--compress`): qcow2 {ratio(best_vnb, vq)}, "
      f"raw {ratio(best_vnb, vr)} of the faster virtnbdrestore | "
      f"{'met' if ok else ('met for raw only' if best * 3 <= best_vnb else '**not met**')} |")
print(f"| ratio to `qemu-img convert` of the same data | qcow2 {ratio(vq, conv)}, raw {ratio(vr, conv)} "
      f"({s2(conv)} convert, which leaves {s2(med('convert_sync'))} of writeback to `sync`) | reported |")
if vals.get("ir_agent"):
    ir = med("ir_agent")
    print(f"| instant recovery: command → guest agent answers < 15 s on TCG | {s(ir)} | "
          f"{'met' if ir < 15 else '**not met**'} |")
