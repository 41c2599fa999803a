#!/usr/bin/env python3
"""Prints the import graph of src/core/ (module -> the core modules it uses) and exits 1 if the
graph has a cycle, or if a path cannot be resolved.

Every file of a core module counts (src/core/x.rs, or src/core/x/*.rs folded into `x`), test
modules included, and every path in code counts, not only `use` lines: `super::x`,
`super::super::x` (resolved against the module nesting, inline `mod m { .. }` included) and
`crate::core::x`, groups `crate::core::{a, b::c}` too. Names re-exported by src/core/mod.rs
(`pub use endpoint::{Shared, ..}`) resolve to the module that defines them. Comments (doc
comments and their examples included) and string literals are ignored. Paths within one module
(`self::`, `super::` inside its own submodules) are not edges.

Usage: scripts/core-imports.py [--quiet]   (--quiet: print only errors and cycles)
"""
import pathlib
import re
import signal
import sys

CORE = pathlib.Path(__file__).resolve().parent.parent / "src" / "core"

RAW_STR = re.compile(r'[bc]?r(#*)"')
CHAR = re.compile(r"b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]+\}|.)|[^\\'\n])'")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"[0-9][0-9A-Za-z_]*")


def tokens(src):
    """Rust tokens that matter here: identifiers, `::` and single punctuation characters.
    Comments, strings, chars, lifetimes and numbers are dropped."""
    i, n = 0, len(src)
    out = []
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif m := RAW_STR.match(src, i):
            end = src.find('"' + m.group(1), m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"' or (c in "bc" and src.startswith('"', i + 1)):
            i = i + 1 if c == '"' else i + 2
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
        elif m := CHAR.match(src, i):
            i = m.end()
        elif c == "'":  # a lifetime or a label
            m = IDENT.match(src, i + 1)
            i = m.end() if m else i + 1
        elif m := IDENT.match(src, i):
            out.append(m.group())
            i = m.end()
        elif m := NUMBER.match(src, i):
            i = m.end()
        elif src.startswith("::", i):
            out.append("::")
            i += 2
        else:
            out.append(c)
            i += 1
    return out


def core_modules():
    """The modules src/core/mod.rs declares, and the names it re-exports (name -> module)."""
    toks = tokens((CORE / "mod.rs").read_text())
    modules, reexports = [], {}
    for k, t in enumerate(toks):
        if t == "mod" and toks[k + 2 : k + 3] == [";"]:
            modules.append(toks[k + 1])
        if t == "use" and toks[k - 1 : k] == ["pub"]:
            for path, bound in use_tree(toks, k + 1)[0]:
                if len(path) > 1:
                    reexports[bound] = path[0]
    return modules, reexports


def use_tree(toks, k):
    """The paths of the use tree (or the path) that starts at `toks[k]`, as (names, bound name)
    pairs, and the index after it: `a::{b, c::d as e}` -> ([a, b], b), ([a, c, d], e)."""
    if toks[k : k + 1] == ["{"]:
        paths, k = [], k + 1
        while k < len(toks) and toks[k] != "}":
            sub, k = use_tree(toks, k)
            paths += sub
            if toks[k : k + 1] == [","]:
                k += 1
            elif toks[k : k + 1] != ["}"]:
                break  # not a use tree after all
        return paths, k + 1
    if k >= len(toks):
        return [], k
    name, k = toks[k], k + 1
    if toks[k : k + 2] == ["::", "{"] or (toks[k : k + 1] == ["::"] and IDENT.fullmatch(toks[k + 1])):
        sub, k = use_tree(toks, k + 1)
        return [([name] + path, bound) for path, bound in sub], k
    if toks[k : k + 1] == ["as"] and k + 1 < len(toks):
        return [([name], toks[k + 1])], k + 2
    return [([name], name)], k


def first_names(toks, k):
    """The first name of each path that continues at `toks[k]` (what it takes from core)."""
    return [path[0] for path, _ in use_tree(toks, k)[0]]


def module_path(path):
    """The module path of a file below src/core, e.g. platform/linux.rs -> [platform, linux]."""
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "mod" else parts


def edges_of(path, modules, reexports, errors):
    """Core modules the file at `path` uses."""
    toks = tokens(path.read_text())
    base = module_path(path)
    found = set()
    inline = []  # (name, brace depth outside it) of the inline `mod name { .. }` we are in
    depth = 0
    where = path.relative_to(CORE.parent.parent)

    def resolve(names, context):
        for name in names:
            if name == "self":
                continue
            if name in modules:
                found.add(name)
            elif name in reexports:
                found.add(reexports[name])
            else:
                errors.append(f"{where}: cannot resolve `{context}{name}`")

    for k, t in enumerate(toks):
        if t == "{":
            if k >= 2 and toks[k - 2] == "mod":
                inline.append((toks[k - 1], depth))
            depth += 1
        elif t == "}":
            depth -= 1
            if inline and inline[-1][1] == depth:
                inline.pop()
        if k > 0 and toks[k - 1] == "::":
            continue  # not the start of a path
        nxt = toks[k + 1 : k + 4]
        if t == "crate" and nxt[:1] == ["::"]:
            if nxt[1:3] == ["core", "::"]:
                resolve(first_names(toks, k + 4), "crate::core::")
            elif nxt[1:2] != ["core"]:
                errors.append(f"{where}: core uses `crate::{nxt[1] if len(nxt) > 1 else ''}`")
        elif t == "super" and nxt[:1] == ["::"]:
            ups, j = 0, k
            while toks[j : j + 2] == ["super", "::"]:
                ups, j = ups + 1, j + 2
            here = base + [name for name, _ in inline]
            if ups > len(here):
                errors.append(f"{where}: `super::` above src/core")
            elif ups == len(here):
                resolve(first_names(toks, j), "super::" * ups)
            # else: a path inside the file's own module
    return found - {base[0]}


def main():
    quiet = "--quiet" in sys.argv[1:]
    modules, reexports = core_modules()
    errors = []
    graph = {m: set() for m in modules}
    for path in sorted(CORE.rglob("*.rs")):
        if path == CORE / "mod.rs":
            continue
        top = module_path(path)[0]
        if top not in graph:
            errors.append(f"{path.relative_to(CORE.parent.parent)}: not declared in src/core/mod.rs")
            continue
        graph[top] |= edges_of(path, modules, reexports, errors)

    # Bottom-up order (Kahn, alphabetical among equals); what remains is on or above a cycle.
    order, done = [], set()
    while True:
        ready = sorted(m for m in graph if m not in done and graph[m] <= done)
        if not ready:
            break
        order += ready
        done |= set(ready)
    left = sorted(m for m in graph if m not in done)

    if not quiet:
        width = max(map(len, graph))
        for m in order + left:
            print(f"{m:<{width}} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if left:
        cycle = find_cycle(graph, left)
        print(f"error: cycle: {' -> '.join(cycle)}", file=sys.stderr)
    sys.exit(1 if errors or left else 0)


def find_cycle(graph, among):
    """One cycle among the modules `among` (each of which is on or leads to a cycle)."""
    path, seen = [among[0]], {among[0]: 0}
    while True:
        nxt = sorted(d for d in graph[path[-1]] if d in among)[0]
        if nxt in seen:
            return path[seen[nxt]:] + [nxt]
        seen[nxt] = len(path)
        path.append(nxt)


if __name__ == "__main__":
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends quietly
    main()
