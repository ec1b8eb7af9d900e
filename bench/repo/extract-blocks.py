#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Writes the listed 64 KiB blocks of IMAGE (read through NBD) back to back into OUT, so
# their compressed size can be measured on their own.
import sys

import nbd

# Usage: extract-blocks.py OFFSETS_FILE OUT NBD_URI
offsets_file, out, uri = sys.argv[1], sys.argv[2], sys.argv[3]
h = nbd.NBD()
h.connect_uri(uri)
with open(out, "wb") as f:
    for line in open(offsets_file):
        f.write(h.pread(65536, int(line)))
h.shutdown()
