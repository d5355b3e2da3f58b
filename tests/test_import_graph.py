"""The dependency rule of ARCHITECTURE.md, checked on the source: planner/ is pure and
imports nothing above it; the scenario schema sits below sim/ and live/; sim/ does not
import live/; nothing imports planlab/; no import circles between files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Names whose use means I/O, a clock or sleeping.
IMPURE_MODULES = {
    "socket",
    "asyncio",
    "subprocess",
    "urllib",
    "http",
    "httpx",
    "aiohttp",
    "requests",
    "threading",
    "multiprocessing",
    "logging.handlers",
    "pathlib",
    "shutil",
    "tempfile",
    "io",
}
IMPURE_CALLS = {
    "open",
    "time.time",
    "time.sleep",
    "time.monotonic",
    "time.perf_counter",
    "datetime.now",
    "datetime.datetime.now",
    "np.load",
    "numpy.load",
    "np.save",
    "np.savez",
    "os.open",
    "os.environ",
    "input",
    "print",
}


def _modules(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _calls(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name:
                found.add(name)
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name in IMPURE_CALLS:
                found.add(name)
    return found


@pytest.mark.parametrize("path", _modules("planner"), ids=lambda p: str(p.relative_to(ROOT)))
def test_planner_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = _imports(tree)
    upward = {m for m in imports if m.split(".")[0] in {"scenario", "sim", "live", "planlab"}}
    assert not upward, f"{path} imports {sorted(upward)}"
    impure = {m for m in imports if m.split(".")[0] in IMPURE_MODULES or m in IMPURE_MODULES}
    assert not impure, f"{path} imports I/O modules {sorted(impure)}"
    calls = _calls(tree) & IMPURE_CALLS
    assert not calls, f"{path} calls {sorted(calls)}"


PROJECT = ("planner", "scenario", "sim", "live", "planlab")


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", _modules("scenario"), ids=lambda p: str(p.relative_to(ROOT)))
def test_scenario_schema_sits_below_sim_and_live(path: Path) -> None:
    imports = _imports(ast.parse(path.read_text()))
    bad = {m for m in imports if _top(m) in {"sim", "live", "planlab"}}
    assert not bad, f"{path} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("sim"), ids=lambda p: str(p.relative_to(ROOT)))
def test_sim_does_not_import_live_or_planlab(path: Path) -> None:
    imports = _imports(ast.parse(path.read_text()))
    bad = {m for m in imports if _top(m) in {"live", "planlab"}}
    assert not bad, f"{path} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("live"), ids=lambda p: str(p.relative_to(ROOT)))
def test_live_does_not_import_planlab(path: Path) -> None:
    imports = _imports(ast.parse(path.read_text()))
    bad = {m for m in imports if _top(m) == "planlab"}
    # live may reuse the simulator's engine timing model only (the emulator is the
    # simulated engine run in real time).
    bad |= {m for m in imports if _top(m) == "sim" and not m.startswith("sim.timing")}
    assert not bad, f"{path} imports {sorted(bad)}"


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out: dict[str, Path] = {}
    for pkg in PROJECT:
        for path in _modules(pkg):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Edges module -> module for every import anywhere in a file (top level, inside a
    function, under TYPE_CHECKING): `from a.b import c` points at a.b.c when that is a
    module of the project, else at a.b."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in files] or [node.module]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_between_files() -> None:
    files = _module_files()
    assert "sim.simulate" in files and "scenario.schema" in files  # the walk sees the project
    cycles = _cycles(_import_graph(files))
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_imports_planlab() -> None:
    graph = _import_graph(_module_files())
    bad = {
        f"{src} -> {dst}"
        for src, dsts in graph.items()
        if _top(src) != "planlab"
        for dst in dsts
        if _top(dst) == "planlab"
    }
    assert not bad, f"planlab/ is the top of the stack; imported by {sorted(bad)}"


def test_the_cycle_finder_sees_a_circle() -> None:
    """A two-file and a three-file circle are found; a chain is not (guards the checker)."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b"], ["c", "d", "e"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """The rule above would flag an impure module (guards against a checker that sees nothing)."""
    src = "import time\nfrom sim.engine import X\n\ndef f():\n    time.sleep(1)\n    open('x')\n"
    tree = ast.parse(src)
    assert "sim.engine" in _imports(tree)
    assert {"time.sleep", "open"} <= _calls(tree)
