"""The floors of DESIGN's layout, checked: ``import steepest`` loads the library only, and the import
graph of ``src/steepest`` (module-level and function-level imports) has no cycles and no upward edges.

Floors, low to high (a module may import its own floor and lower ones):
    0 ``steepest._io``, ``steepest.linalg``      1 ``steepest.norms``, ``steepest.geometry``
    2 ``steepest.diagnostics``                  3 ``steepest.optim``, ``steepest.testing``, ``steepest`` itself
    3.5 ``steepest.integrations`` (HF Trainer, Lightning; imported on demand only)
    4 ``steepest.app``, itself layered: runs < report, tasks, launch < compare, reproduce < commands < cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import steepest

SRC = Path(steepest.__file__).resolve().parent

#: Floor of each module prefix (the longest matching prefix wins). A new top-level module needs a row.
FLOORS = {
    "steepest._io": 0,
    "steepest.linalg": 0,
    "steepest.norms": 1,
    "steepest.geometry": 1,
    "steepest.diagnostics": 2,
    "steepest.optim": 3,
    "steepest.testing": 3,
    "steepest": 3,
    "steepest.integrations": 3.5,
    "steepest.app": 4.0,
    "steepest.app.runs": 4.0,
    "steepest.app.report": 4.1,
    "steepest.app.tasks": 4.1,
    "steepest.app.launch": 4.1,
    "steepest.app.compare": 4.2,
    "steepest.app.reproduce": 4.2,
    "steepest.app.commands": 4.3,
    "steepest.app.cli": 4.4,
}

#: ``steepest.compare`` is the application's main job re-exported on the package; steepest/__init__.py
#: imports it inside ``__getattr__`` on first access, so this one upward edge never runs at import time.
LAZY_ALIAS = {("steepest", "steepest.app.compare")}

#: Known violations in modules owned by the kernel rewrite, left out of both checks: the diagnostics take
#: ``matrix_view`` from optim (floor 2 -> 3; it belongs to the norm registry), and optim.batched imports
#: ``update_kwargs`` back from optim.steepest inside two functions (a cycle). Delete entries as they go.
KNOWN_UPWARD: set[tuple[str, str]] = set()  # none left: the kernel rewrite removed the last ones

#: Modules that need an optional framework (skipped by the import checks when it is not installed).
OPTIONAL_DEPS = {
    "steepest.integrations.hf": "transformers",
    "steepest.integrations.lightning": "lightning",
    "steepest.integrations.torchtitan": "torchtitan",
}

#: Package attributes allowed to shadow a submodule of the same name: none (linalg.polar became
#: linalg.polar_factor, so the function steepest.linalg.polar no longer hides a module).
KNOWN_SHADOWED: set[str] = set()


def _module_name(path: Path) -> str:
    parts = ("steepest", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(name: str, modules) -> str | None:
    """The steepest module ``name`` refers to (``steepest.a.b.func`` -> ``steepest.a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges() -> set[tuple[str, str]]:
    """``(importer, imported)`` for every ``import``/``from`` statement anywhere in a steepest module."""
    modules = _modules()
    edges = set()
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t == "steepest" or t.startswith("steepest."):
                    r = _resolve(t, modules)
                    if r and r != mod:
                        edges.add((mod, r))
    return edges


def floor(mod: str) -> float:
    key = max((k for k in FLOORS if mod == k or mod.startswith(k + ".")), key=len, default=None)
    assert key is not None, f"{mod} has no floor: add its prefix to FLOORS in tests/test_layout.py"
    return FLOORS[key]


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_steepest_loads_no_application_and_no_yaml(tmp_path):
    code = (
        "import steepest, sys; bad = sorted(m for m in sys.modules if m == 'yaml' or m.startswith('yaml.') "
        "or m == 'steepest.app' or m.startswith('steepest.app.')); print(bad); assert not bad, bad; "
        "assert callable(steepest.compare); assert 'steepest.app.compare' in sys.modules"
    )
    env = {k: v for k, v in __import__("os").environ.items()}
    env["PYTHONPATH"] = str(SRC.parent) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compare_alias_does_not_shadow_the_package():
    import steepest.app.compare as job_package

    assert steepest.compare is job_package.compare
    assert isinstance(steepest.app.compare, type(steepest))  # the package, not the function
    assert "compare" not in vars(steepest)  # resolved by __getattr__ on each access


def test_no_import_cycles():
    edges = import_edges() - LAZY_ALIAS - KNOWN_UPWARD
    assert _cycles(edges) == []


def test_no_upward_imports():
    edges = import_edges() - LAZY_ALIAS
    upward = sorted((a, b) for a, b in edges if floor(b) > floor(a) and (a, b) not in KNOWN_UPWARD)
    assert upward == [], "lower floors must not import higher ones"


def test_known_upward_edges_still_exist():
    stale = KNOWN_UPWARD - import_edges()
    assert not stale, f"fixed, so delete them from KNOWN_UPWARD: {sorted(stale)}"


def test_lazy_alias_is_the_only_edge_into_the_app_from_the_library():
    into_app = {(a, b) for a, b in import_edges() if floor(b) >= 4 > floor(a)}
    assert into_app == LAZY_ALIAS


def test_no_name_shadows_a_submodule():
    """A package attribute named like one of its submodules is that submodule (not, say, a function)."""
    import importlib
    import importlib.util
    import types

    modules = _modules()
    shadowed = []
    for mod in sorted(modules):
        parent, _, leaf = mod.rpartition(".")
        if not parent or parent not in modules:
            continue
        if mod in OPTIONAL_DEPS and importlib.util.find_spec(OPTIONAL_DEPS[mod]) is None:
            continue  # an integration whose framework is not installed
        importlib.import_module(mod)
        attr = getattr(importlib.import_module(parent), leaf, None)
        if (not isinstance(attr, types.ModuleType) or attr.__name__ != mod) and mod not in KNOWN_SHADOWED:
            shadowed.append(f"{parent}.{leaf} is {attr!r}")
    assert shadowed == []
