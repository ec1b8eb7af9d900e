#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Regenerates calendar_golden.inc: for each (TZ, base time, expression) below, what
`systemd-analyze calendar --base-time=@BASE --iterations=N` prints — the normalized form and
the next N elapses (Unix seconds, from the "(in UTC)" lines; none for "never").

Run on a host with systemd-analyze (Debian 12: systemd 252):
    python3 tests/unit/daemon/make-calendar-golden.py > tests/unit/daemon/calendar_golden.inc
"""
import calendar
import os
import re
import subprocess
import sys
import time

ITERATIONS = 6


def utc(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


BASE = utc("2026-03-27 10:17:33")           # a Friday, two days before Berlin's DST start
SPRING = utc("2026-03-28 23:58:20")         # Berlin 00:58:20 CET, an hour before the gap
FALL = utc("2026-10-24 23:59:59")           # Berlin 01:59:59 CEST, before the repeated hour
IN_OVERLAP = utc("2026-10-25 01:05:00")     # Berlin 02:05 CET, inside the repeated hour
US_SPRING = utc("2026-03-07 12:00:00")      # New York's DST starts 2026-03-08
SYDNEY = utc("2026-04-03 00:00:00")         # Sydney's DST ends 2026-04-05
FAR = utc("2040-03-20 00:00:00")            # past the zone files' tables: their POSIX rules
YEAR_END = utc("2026-12-30 18:00:00")

BERLIN = "Europe/Berlin"
POSIX_BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"

# (TZ of the process, base time, expression)
CASES = [
    # the shorthands
    ("UTC", BASE, "minutely"),
    ("UTC", BASE, "hourly"),
    ("UTC", BASE, "daily"),
    ("UTC", BASE, "weekly"),
    ("UTC", BASE, "monthly"),
    ("UTC", YEAR_END, "yearly"),
    ("UTC", BASE, "annually"),
    ("UTC", BASE, "quarterly"),
    ("UTC", BASE, "semiannually"),
    ("UTC", BASE, "DAILY"),
    # issue 14's examples
    ("UTC", BASE, "Mon..Fri 22:00"),
    ("UTC", BASE, "*:0/15"),
    ("UTC", BASE, "*-*-* 02:00:00"),
    ("UTC", BASE, "*:*:0/20"),
    # weekdays: lists, ranges, the old "-" range, case
    ("UTC", BASE, "Sat,Sun 10:30"),
    ("UTC", BASE, "Mon,Wed,Fri *-*-* 08:00"),
    ("UTC", BASE, "Tuesday..Thursday 1:00"),
    ("UTC", BASE, "Mon-Wed,Fri 12:00"),
    ("UTC", BASE, "sat,SUN"),
    ("UTC", BASE, "Mon..Sun 06:00"),
    # dates: lists, ranges, repetitions, years
    ("UTC", BASE, "*-*-1,15 03:00"),
    ("UTC", BASE, "*-1/2-01 00:00"),
    ("UTC", BASE, "2026-12-* 12:00"),
    ("UTC", BASE, "2026..2034/2-06-15"),
    ("UTC", BASE, "12-24"),
    ("UTC", BASE, "27-1-1"),
    ("UTC", BASE, "*-*-29..31 23:00"),
    ("UTC", BASE, "Fri *-*-13"),
    ("UTC", BASE, "Mon *-*-1..7 09:00"),
    ("UTC", BASE, "*-02-29"),
    ("UTC", BASE, "Mon *-02-29"),
    # the last days of the month
    ("UTC", BASE, "*-*~01"),
    ("UTC", BASE, "*-02~01..03"),
    ("UTC", BASE, "*-*~07/2 12:00"),
    ("UTC", BASE, "*-04~04..20/7"),
    ("UTC", BASE, "*-*~01,02"),
    ("UTC", BASE, "Fri *~1..7 18:00"),
    # times: lists, ranges, repetitions, seconds
    ("UTC", BASE, "8..18:00"),
    ("UTC", BASE, "8..18/4:30"),
    ("UTC", BASE, "0/6:00"),
    ("UTC", BASE, "*:05,20,35,50"),
    ("UTC", BASE, "*:30,0,15,15"),
    ("UTC", BASE, "*:*:30"),
    ("UTC", BASE, "*:0/10:15"),
    ("UTC", BASE, "*:0/15:0/20"),
    ("UTC", BASE, "*:*:*"),
    ("UTC", BASE, "*-*-* 23:59:59"),
    ("UTC", BASE, "3..4/5:00"),
    ("UTC", BASE, "*:*:0/1,5"),
    ("UTC", BASE, "*:*:28..29.5"),
    ("UTC", BASE, "*:*:1..2/1.5"),
    ("UTC", BASE, "Mon  *-*-*   12:00"),
    ("UTC", BASE, "Mon,Tue, 7:00"),
    # a repetition that runs past the field's end must not skip the next field's first values
    ("UTC", BASE, "*:1/32"),
    ("UTC", BASE, "*:*:9/22"),
    ("UTC", BASE, "04..11,01/9,10:19"),
    ("UTC", BASE, "*-*-1/10 12:00"),
    ("UTC", BASE, "*-*-* 12:00:00.5"),
    ("UTC", BASE, "*:*:0/7.5"),
    # never again, or once
    ("UTC", BASE, "2020-02-30"),
    ("UTC", BASE, "*-02-30"),
    ("UTC", BASE, "2026-01-01"),
    ("UTC", BASE, "@1800000000"),
    ("UTC", BASE, "2199-12-31 23:59:59"),
    # time zones: UTC, IANA names, the local zone, DST gaps and overlaps
    (BERLIN, BASE, "daily UTC"),
    (BERLIN, BASE, "Mon..Fri 22:00 utc"),
    (BERLIN, SPRING, "daily"),
    (BERLIN, SPRING, "*-*-* 02:30"),
    (BERLIN, SPRING, "minutely"),
    (BERLIN, SPRING, "hourly"),
    (BERLIN, SPRING, "*:0/20"),
    (BERLIN, FALL, "*-*-* 02:30"),
    (BERLIN, FALL, "*:0/20"),
    (BERLIN, FALL, "hourly"),
    (BERLIN, FALL, "*-*-* 1,2,3:00"),
    (BERLIN, IN_OVERLAP, "*:0/20"),
    (BERLIN, IN_OVERLAP, "*-*-* 02:30"),
    ("UTC", SPRING, "*-*-* 02:30 Europe/Berlin"),
    ("UTC", SPRING, "*:0/30 Europe/Berlin"),
    ("UTC", FALL, "*:0/20 Europe/Berlin"),
    ("UTC", IN_OVERLAP, "*:0/20 Europe/Berlin"),
    ("America/New_York", SPRING, "hourly Europe/Berlin"),
    ("UTC", US_SPRING, "*-*-* 02:00 America/New_York"),
    ("UTC", US_SPRING, "*:0/30 America/New_York"),
    ("UTC", BASE, "Mon..Fri 22:00 Asia/Tokyo"),
    ("UTC", BASE, "*:0/20 Asia/Kathmandu"),
    ("UTC", SYDNEY, "*:0/30 Australia/Lord_Howe"),
    ("UTC", BASE, "daily Etc/GMT+5"),
    ("UTC", SYDNEY, "daily Australia/Sydney"),
    ("UTC", SYDNEY, "*-*-* 02:30 Australia/Sydney"),
    ("UTC", BASE, "quarterly Europe/Berlin"),
    ("UTC", BASE, "weekly Europe/Berlin"),
    ("UTC", FAR, "*-*-* 02:30 Europe/Berlin"),
    ("UTC", FAR, "hourly America/New_York"),
    (BERLIN, FAR, "*-*-* 02:30"),
    (POSIX_BERLIN, SPRING, "*-*-* 02:30"),
    (POSIX_BERLIN, FALL, "*:0/20"),
    ("America/New_York", US_SPRING, "Sun *-*-* 2:30"),
]


def run(tz, base, expr):
    env = dict(os.environ, TZ=tz, LC_ALL="C")
    out = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={ITERATIONS}", f"--base-time=@{base}", expr],
        env=env, capture_output=True, text=True, check=True).stdout
    normalized = re.search(r"^Normalized form: (.*)$", out, re.M).group(1)
    # Each elapse is a "Next elapse:"/"Iter. #n:" line in local time, followed by an
    # "(in UTC):" line unless local time is UTC.
    elapses = []
    for m in re.finditer(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) (\S+)\n"
                         r"(?:\s+\(in UTC\): \w+ (\S+ \S+) UTC\n)?", out):
        if m.group(3):
            elapses.append(utc(m.group(3)))
        elif m.group(2) == "UTC":
            elapses.append(utc(m.group(1)))
        else:
            sys.exit(f"no UTC time for an elapse of {expr!r}:\n{out}")
    if not elapses and "Next elapse: never" not in out:
        sys.exit(f"cannot read the elapses of {expr!r}:\n{out}")
    return normalized, elapses


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    version = subprocess.run(["systemd-analyze", "--version"], capture_output=True,
                             text=True, check=True).stdout.splitlines()[0]
    print("// Generated by tests/unit/daemon/make-calendar-golden.py from systemd-analyze")
    print(f"// ({version}); do not edit. Rows: TZ, base (Unix s), expression, normalized form,")
    print(f"// the next {ITERATIONS} elapses (Unix s, whole seconds).")
    for tz, base, expr in CASES:
        normalized, elapses = run(tz, base, expr)
        print(f"{{{c_string(tz)}, {base}, {c_string(expr)}, {c_string(normalized)}, "
              f"{{{', '.join(str(e) for e in elapses)}}}}},")


main()
