#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The layer table in docs/ARCHITECTURE.md, the CMake link graph and the compiler agree.

1. Each layer's public and private uses in the table are exactly its target's PUBLIC and
   PRIVATE links to other layers (written by tests/CMakeLists.txt at configure time).
2. The table's "sees" column is what follows from them: a layer sees the layers it uses and,
   transitively, what those use publicly.
3. The compiler enforces it: with the flags a source file of layer L is built with, an
   #include of every other layer's header is tried; it must resolve exactly when L sees that
   layer, and otherwise fail as a missing file (not for some other reason).
4. No source file includes a layer its layer does not see (the build would fail too; this
   names the file).

usage: layering-check.py ARCHITECTURE.md LINKS_FILE compile_commands.json SRC_DIR
"""
import json
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

LAYERS = ["common", "storage", "virt", "vss", "repo", "vmwriter", "engine", "export", "net", "replica",
          "daemon", "cli"]
LAYER_WORD = re.compile(r"\b(" + "|".join(LAYERS) + r")\b")


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def layers_in(cell):
    return set(LAYER_WORD.findall(cell))


def read_table(doc):
    """{layer: (public, private, sees)} from the table whose header names those columns."""
    lines = doc.read_text().splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("|") and "public uses" in l)
    names = cells(lines[header])
    pub, priv, sees = (names.index(n) for n in ("public uses", "private uses", "sees"))
    table = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        row = cells(line)
        layer = re.search(r"`src/(\w+)/`", row[0]).group(1)
        table[layer] = tuple(layers_in(row[i]) - {layer} for i in (pub, priv, sees))
    return table


def read_links(path):
    """{layer: (public, private)}: lines 'layer;PUBLIC;a,b;PRIVATE;c'."""
    links = {}
    for line in pathlib.Path(path).read_text().splitlines():
        layer, _, public, _, private = line.split(";")
        links[layer] = (set(filter(None, public.split(","))),
                        set(filter(None, private.split(","))))
    return links


def closure(links, layer):
    seen = set()
    todo = list(links[layer][0] | links[layer][1])
    while todo:
        other = todo.pop()
        if other not in seen:
            seen.add(other)
            todo.extend(links[other][0])  # only what it uses publicly reaches its users
    return seen


def compile_flags(compile_commands, src, layer):
    """The compiler command a .cpp of the layer is built with, minus its input and outputs."""
    for entry in json.loads(pathlib.Path(compile_commands).read_text()):
        if pathlib.Path(entry["file"]).parent == src / layer:
            args = entry.get("arguments") or shlex.split(entry["command"])
            kept, skip = [], False
            for a in args:
                if skip:
                    skip = False
                elif a in ("-o", "-MT", "-MF", "-MQ"):
                    skip = True
                elif a not in ("-c", "-MD", "-MMD") and a != entry["file"]:
                    kept.append(a)
            return kept, entry["directory"]
    raise SystemExit(f"no compile command for a source of src/{layer}/")


def probe(flags, directory, header):
    with tempfile.NamedTemporaryFile("w", suffix=".cpp") as f:
        f.write(f'#include "{header}"\n')
        f.flush()
        r = subprocess.run(flags + ["-E", "-o", "/dev/null", f.name], cwd=directory,
                           capture_output=True, text=True)
    return r.returncode == 0, r.stderr


def main(doc, links_file, compile_commands, src):
    src = pathlib.Path(src).resolve()
    table, links = read_table(pathlib.Path(doc)), read_links(links_file)
    failures = []
    for layer in LAYERS:
        public, private, sees = table[layer]
        if (public, private) != links[layer]:
            failures.append(f"{layer}: table says public {sorted(public)} private "
                            f"{sorted(private)}, CMake links public {sorted(links[layer][0])} "
                            f"private {sorted(links[layer][1])}")
        if sees != closure(links, layer):
            failures.append(f"{layer}: table says it sees {sorted(sees)}, the links give "
                            f"{sorted(closure(links, layer))}")
    for layer in LAYERS:
        visible = closure(links, layer)
        for path in sorted((src / layer).glob("*.[ch]*")):
            for m in re.finditer(r'#include "(\w+)/', path.read_text()):
                if m.group(1) in LAYERS and m.group(1) not in visible | {layer}:
                    failures.append(f"{path.relative_to(src)} includes {m.group(1)}/, which "
                                    f"{layer} may not use")
        flags, directory = compile_flags(compile_commands, src, layer)
        for other in LAYERS:
            if other == layer:
                continue
            header = f"{other}/{sorted((src / other).glob('*.h'))[0].name}"
            ok, err = probe(flags, directory, header)
            if other in visible and not ok:
                failures.append(f"{layer} may use {other} but #include \"{header}\" fails:\n{err}")
            if other not in visible and ok:
                failures.append(f"{layer} may not use {other} but #include \"{header}\" builds")
            if other not in visible and not ok and "No such file" not in err:
                failures.append(f"{layer}: #include \"{header}\" fails for another reason:\n{err}")
            print(f"{layer:8} -> {other:8} {'builds' if ok else 'refused'}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    sys.exit(main(*sys.argv[1:]))
