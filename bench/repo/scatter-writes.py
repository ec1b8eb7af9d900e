#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Usage: scatter-writes.py PERCENT SEED OFFSETS_FILE NBD_URI
# Changes PERCENT % of a disk image in scattered 4 KiB writes of random bytes, through an
# NBD server (qemu-nbd) so qcow2 images are written by QEMU itself. Prints the offsets of
# the 64 KiB blocks that changed, one per line, to OFFSETS_FILE.
import random
import sys

import nbd

# The NBD URI comes last (run.sh's with_nbd appends it).
percent, seed, offsets_file, uri = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
rng = random.Random(seed)
count = int(size * percent / 100 / 4096)
blocks = set()
for _ in range(count):
    off = rng.randrange(size // 4096) * 4096
    h.pwrite(rng.randbytes(4096), off)
    blocks.add(off // 65536 * 65536)
h.flush()
h.shutdown()
with open(offsets_file, "w") as f:
    for b in sorted(blocks):
        f.write(f"{b}\n")
print(f"{count} writes of 4 KiB, {len(blocks)} distinct 64 KiB blocks changed", file=sys.stderr)
