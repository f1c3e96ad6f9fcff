"""cogkit's import graph has no cycle: a lower module never imports a higher one.

Every import counts, the ones deferred into functions too (they are the same dependency,
only later); ``from pkg import sub`` is an edge to the submodule ``pkg.sub`` when there is
one; imports under ``if TYPE_CHECKING:`` do not run and do not count."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "cogkit"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in mods:
                        graph[name].add(sub)
                    elif base in mods:
                        graph[name].add(base)
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_the_scanner_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _graph_in_a_fresh_interpreter() -> dict[str, list[str]]:
    # In a fresh interpreter: CPython 3.11.7's ast.parse can fail with "AST constructor recursion
    # depth mismatch" after other tests changed the recursion state (gh-106905).
    code = ("import json; from tests.sdk.test_import_graph import import_graph; "
            "print(json.dumps({k: sorted(v) for k, v in import_graph().items()}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cogkit_has_no_import_cycle():
    graph = _graph_in_a_fresh_interpreter()
    assert "cogkit.hub.service" in graph and "cogkit.server.app" in graph
    assert cycles({k: set(v) for k, v in graph.items()}) == []


CAPABILITIES = ("worker", "server", "cli", "build", "hub")


def test_the_core_imports_no_capability_package():
    # cogkit/*.py (the SDK, schema, files, validation) sit below the worker, server, CLI,
    # build and hub packages: only the entry point reaches up.
    graph = _graph_in_a_fresh_interpreter()
    upward = {
        (mod, dep)
        for mod, deps in graph.items()
        if mod.count(".") == 1 and mod not in ("cogkit.__main__", "cogkit.ml", "cogkit.playground")
        and mod.split(".")[1] not in CAPABILITIES
        for dep in deps
        if dep.split(".")[1] in CAPABILITIES
    }
    assert upward == set()
