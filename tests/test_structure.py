"""The house's structure: no import circles among ferlib, webapp and pages.

The import graph is read from the source with `ast` (nothing is imported): an edge A -> B for every
`import B` / `from B import x` / `from B import submodule` in A, relative imports resolved. An
import inside a function or under ``if TYPE_CHECKING:`` runs later (or never), so it cannot make a
circle at import time; those are checked separately, with the circles still known listed below.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ferlib", "webapp")

# Circles through in-function imports still in the code, each with the issue that removes it. A
# new one fails the test; one that is gone must be deleted here.
KNOWN_DEFERRED_CIRCLES: list[set[str]] = []


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    for p in (ROOT / "pages").glob("*.py"):
        mods[f"pages.{p.stem}"] = p
    return mods


def _imports(body: list[ast.stmt], deferred: bool):
    """Import statements run when the module is imported (or every one, `deferred`)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if deferred:
                yield from _imports(node.body, deferred)
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if deferred:
                yield from _imports(node.body, deferred)
            yield from _imports(node.orelse, deferred)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            sub = getattr(node, field, None)
            if isinstance(sub, list):
                yield from _imports(sub, deferred)


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, deferred):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            deps.update(t for t in targets if t in mods and t != name)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    g = import_graph()
    assert "ferlib.fsutil" in g["ferlib.store.sessions"]
    assert "ferlib.data.importers" in g["ferlib.data.cache"]  # relative import resolved
    assert "webapp.datasets" in g["webapp.jobs"]


def test_no_import_circle_at_import_time():
    assert circles(import_graph()) == []


def test_no_new_circle_through_deferred_imports():
    found = circles(import_graph(deferred=True))
    assert [c for c in found if c not in KNOWN_DEFERRED_CIRCLES] == []
    assert [c for c in KNOWN_DEFERRED_CIRCLES if c not in found] == [], "a known circle is gone: delete it here"


# Imports of ferlib/webapp modules inside a function body: only the CLI defers them (each command
# imports its modules when it runs). Any other one is listed here with the reason it stays deferred.
DEFERRED_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}
DEFERRING_MODULES = {"ferlib.cli"}


def _deferred_imports(body: list[ast.stmt], in_function: bool = False):
    """(import node) for every import statement inside a function body."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _deferred_imports(node.body, True)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if in_function:
                yield node
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _deferred_imports([child], in_function)


def test_ferlib_and_webapp_modules_are_imported_at_module_top():
    mods = _modules()
    found = set()
    for name, path in mods.items():
        if name in DEFERRING_MODULES:
            continue
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in _deferred_imports(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
                # `from ferlib import realign` imports the module ferlib.faces.realign
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if t.split(".")[0] in PACKAGES:
                    found.add((name, t) if (name, t) in DEFERRED_IMPORTS_ALLOWED else (name, t, node.lineno))
    assert [f for f in found if len(f) == 3] == [], "import these at module top (or list them with a reason)"
    assert [k for k in DEFERRED_IMPORTS_ALLOWED if k not in found] == [], "gone: delete it from the list"


def test_fsutil_is_under_everything():
    assert import_graph(deferred=True)["ferlib.fsutil"] <= {"ferlib.errors"}


def test_the_library_never_imports_streamlit():
    for name, path in _modules().items():
        if name.startswith("ferlib"):
            for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, deferred=True):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "streamlit" for m in mods), name


_SIDE_EFFECTS = r"""
import ast, os, sys
import mediapipe, torch  # third-party imports may set variables (mediapipe: LD_LIBRARY_PATH)
before = dict(os.environ)
import ferlib.faces.landmarks, ferlib.inference.pipeline, ferlib.faces.graphs
assert dict(os.environ) == before, sorted(set(os.environ) ^ set(before))
assert not getattr(ast.parse, "_ferlib_serialised", False), "ferlib must not touch ast.parse"
import webapp
assert getattr(ast.parse, "_ferlib_serialised", False) == (sys.version_info < (3, 12))
assert ast.literal_eval("{'a': (1, 2)}") == {"a": (1, 2)}
"""


def test_importing_the_library_has_no_side_effects():
    """ferlib sets no environment variable and patches nothing when imported; only webapp installs
    its documented work-around (webapp.compat.serialise_ast_parse)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _SIDE_EFFECTS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


# The layers, lowest first (docs/ARCHITECTURE.md says why): a module imports its own layer and the ones
# below, never one above, deferred imports included. `ferlib` top-level modules are the shared base.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("ferlib", "ferlib._version", "ferlib.classes", "ferlib.errors", "ferlib.types", "ferlib.locations",
              "ferlib.fsutil", "ferlib.io")),
    ("faces", ("ferlib.faces",)),
    ("models and store", ("ferlib.models", "ferlib.store")),
    ("inputs", ("ferlib.inputs",)),
    ("inference", ("ferlib.inference",)),
    ("data", ("ferlib.data",)),
    ("training", ("ferlib.training",)),
    ("scale-out and benchmarks", ("ferlib.scale", "ferlib.bench")),
    ("cli", ("ferlib.cli", "ferlib.__main__")),
    ("app", ("webapp", "pages")),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific prefix naming `module` (KeyError if none does)."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None:
        raise KeyError(module)
    return best[0]


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m.startswith("ferlib") and layer_of(m) == 0 and m.count(".") > 1] == []
    for m in _modules():
        layer_of(m)  # raises for a module no layer names


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a))


def test_imports_run_down_the_layers_only():
    assert upward_imports(import_graph(deferred=True)) == []


def test_layer_check_catches_an_upward_import():
    graph = {"ferlib.faces.realign": {"ferlib.inference.checkpoint", "ferlib.errors"},
             "ferlib.training.train": {"ferlib.inference.runtime"}, "ferlib.cli": {"webapp.video"}}
    assert upward_imports(graph) == [
        "ferlib.cli (cli) imports webapp.video (app)",
        "ferlib.faces.realign (faces) imports ferlib.inference.checkpoint (inference)"]


def test_the_package_top_holds_entry_points_and_shared_definitions_only():
    top = sorted(p.stem for p in (ROOT / "ferlib").glob("*.py"))
    assert len(top) <= 10, top
    allowed = {m.split(".")[-1] for m in LAYERS[0][1]} | {"__init__", "cli", "__main__"}
    assert set(top) <= allowed, sorted(set(top) - allowed)
