#!/usr/bin/env python3
"""Import cycles between the files of src/actors and src/ipc.

Reads every `use super::x`, `use crate::actors::x` / `crate::ipc::x` (also inside braces) and
`super::x::` / `crate::actors::x::` path in the code (comments and string-free doc lines
skipped), builds the file graph of each directory, and prints its strongly connected
components. Exits 1 if one has more than `--max` files (default 2: a pair that names each
other is allowed, a longer cycle is not), or if `actors/pull.rs` imports `actors/remote.rs`
(pull reaches remotes only through `upstream`). `tests/module_cycles.rs` runs the same check
under `cargo test`.

    python3 scripts/module_cycles.py [--max N]
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRS = {"actors": ROOT / "src" / "actors", "ipc": ROOT / "src" / "ipc"}


def code_lines(text):
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("//"):
            continue
        yield line.split("//")[0]


def references(path, here, modules, prefixes=None):
    """Modules of the same directory that `path` names."""
    text = "\n".join(code_lines(path.read_text()))
    found = set()
    if prefixes is None:
        prefixes = [r"super::", rf"crate::{here}::"]
    for p in prefixes:
        # super::x  /  crate::actors::x
        for m in re.finditer(p + r"(\w+)", text):
            found.add(m.group(1))
        # super::{x, y::z, self}
        for m in re.finditer(p + r"\{([^}]*)\}", text, re.S):
            for part in m.group(1).split(","):
                name = part.strip().split("::")[0].strip()
                if name:
                    found.add(name)
    return {f for f in found if f in modules and f != path.stem}


def module_references(node, here, modules):
    """What module `node` (a file `x.rs`, or a directory `x/` with `mod.rs`) names. Inside a
    directory module, `mod.rs` names siblings as `super::y`; its submodules name them as
    `super::super::y` or `crate::<dir>::y` (their `super::` is the module itself)."""
    if node.is_file():
        return references(node, here, modules)
    name = node.name
    found = references(node / "mod.rs", here, modules) - {name}
    for sub in node.rglob("*.rs"):
        if sub.name != "mod.rs" or sub.parent != node:
            deep = [r"super::super::", rf"crate::{here}::"]
            found |= references(sub, here, modules, deep) - {name}
    return found


def sccs(graph):
    """Tarjan's strongly connected components."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=2)
    args = ap.parse_args()
    worst = 0
    failed = False
    for here, d in DIRS.items():
        files = sorted(p for p in d.glob("*.rs") if p.stem != "mod")
        dirs = sorted(p for p in d.iterdir() if (p / "mod.rs").is_file())
        nodes = {p.stem: p for p in files}
        nodes.update({p.name: p for p in dirs})
        modules = set(nodes)
        graph = {m: module_references(p, here, modules) for m, p in nodes.items()}
        if here == "actors" and "remote" in graph.get("pull", set()):
            print("FAIL: src/actors/pull.rs imports remote")
            failed = True
        for comp in sccs(graph):
            if len(comp) > 1:
                worst = max(worst, len(comp))
                print(f"src/{here}: cycle of {len(comp)}: {', '.join(comp)}")
    if worst > args.max:
        print(f"FAIL: a cycle of {worst} files (at most {args.max} allowed)")
        return 1
    if failed:
        return 1
    print(f"ok: no cycle of more than {args.max} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
