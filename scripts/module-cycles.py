#!/usr/bin/env python3
"""Finds import cycles between the modules of each Rust crate of the workspace (issue 27: none may
remain). A module's edges are the modules it names through `crate::` or `super::` paths outside its
tests; a child naming its parent (`use super::*`) is not an edge. Prints each strongly connected
group of modules and exits 1 if there is one. Crates depend one way by Cargo's own rule.

    python3 scripts/module-cycles.py [CRATE_DIR...]   (default: every crate with a src/)
"""
import os
import re
import sys
from collections import defaultdict


def modules(crate):
    src = os.path.join(crate, "src")
    found = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(root, f)
                parts = os.path.relpath(path, src)[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                found["::".join(parts)] = path
    return found


def edges_of(mods):
    edges = defaultdict(set)
    for m, path in mods.items():
        text = open(path, encoding="utf-8").read()
        cut = text.find("#[cfg(test)]\nmod tests")
        if cut >= 0:
            text = text[:cut]
        text = re.sub(r"//.*", "", text)
        for ref in re.findall(r"crate::([a-z_]+(?:::[a-z_]+)*)", text):
            segs = ref.split("::")
            for k in range(len(segs), 0, -1):
                target = "::".join(segs[:k])
                if target in mods:
                    if target != m and not m.startswith(target + "::"):
                        edges[m].add(target)
                    break
        parent = m.split("::")[:-1] if m else []
        for ref in re.findall(r"\bsuper::([a-z_]+)", text):
            target = "::".join(parent + [ref])
            if target in mods and target != m:
                edges[m].add(target)
    return edges


def cycles(mods, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    crates = sys.argv[1:] or sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "src"))
    )
    found = 0
    for crate in crates:
        mods = modules(os.path.join(root, crate))
        for group in cycles(mods, edges_of(mods)):
            found += 1
            print(f"module-cycles: {crate}: " + " <-> ".join(group))
    print(f"module-cycles: {len(crates)} crates, {found} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
