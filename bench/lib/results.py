#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# What the benchmarks' scripts share: reading a run.sh results file (lines "name value
# max_rss_kib"), and writing a report into its section of bench/RESULTS.md.
#   As a module:  from results import load_results
#   As a command: results.py write-section RESULTS.md report.md bench/NAME
#     replaces what lies between RESULTS.md's "<!-- bench/NAME/run.sh report: begin -->" and
#     "... end -->" markers with report.md (the analysis around them is written by hand).
import collections
import sys


def load_results(path):
    """(values, rss): each name's values and peak RSS (KiB) in file order."""
    vals = collections.defaultdict(list)
    rss = collections.defaultdict(list)
    for line in open(path):
        name, a, b = line.split()
        vals[name].append(float(a))
        rss[name].append(int(b))
    return vals, rss


def write_section(results_md, report_md, bench):
    report = open(report_md).read().strip()
    begin = f"<!-- {bench}/run.sh report: begin -->"
    end = f"<!-- {bench}/run.sh report: end -->"
    text = open(results_md).read()
    if begin not in text or end not in text:
        print(f"{bench}: {results_md} has no {bench} markers; not written", file=sys.stderr)
        return
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    open(results_md, "w").write(head + begin + "\n" + report + "\n" + end + tail)
    print(f"{bench}: report written into {results_md}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "write-section":
        sys.exit("usage: results.py write-section RESULTS.md report.md bench/NAME")
    write_section(sys.argv[2], sys.argv[3], sys.argv[4])
